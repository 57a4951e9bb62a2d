"""`wattlm compress`: options → configs → load → (calibrate) → compress (→ recover) → save, every
option checked before the model loads and nothing written unless every step finished.

`--technique` is one technique or variant name, or several joined by `+` and applied in order
(`wanda50+int8`), as in `wattlm bench --variants`."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..progress import Progress, no_progress
from .config import CONFIGS, CompressConfig, config_from_name

EVAL_TOKENS_SKIPPED = 8192  # wattlm bench scores the default text's first 8,192 tokens: calibrate after them


@dataclass(frozen=True)
class CompressRequest:
    technique: str
    out: Path
    model: str | None = None
    bits: int | None = None
    group_size: int | None = None
    asymmetric: bool = False
    smooth: bool = False
    alpha: float | None = None
    keep: tuple[str, ...] = ()
    sparsity: float | None = None
    scope: str | None = None
    recover_steps: int = 0
    dtype: str = "fp32"
    calib_text: Path | None = None
    calib_samples: int = 128
    seq_len: int = 512
    device: str = "auto"
    trust_remote_code: bool = False
    offline: bool = False

    def __post_init__(self) -> None:
        """Every option checked on creation, before anything loads."""
        from ..models.load import DTYPES

        request = self
        if request.dtype not in DTYPES:
            raise ConfigError(
                f"{{dtype}} {request.dtype!r}: use one of {', '.join(DTYPES)}", field="dtype", value=request.dtype
            )
        if request.calib_samples < 1 or request.seq_len < 2:
            raise ConfigError(
                "{calib_samples} must be ≥ 1 and {seq_len} ≥ 2", field="calib_samples", value=request.calib_samples
            )
        if request.recover_steps < 0:
            raise ConfigError(
                f"{{recover_steps}} must be ≥ 0, got {request.recover_steps}",
                field="recover_steps",
                value=request.recover_steps,
            )


def _options(request: CompressRequest) -> dict[str, Any]:
    """The config fields the request's options set (those the user gave)."""
    options = {
        "bits": request.bits,
        "group_size": request.group_size,
        "symmetric": False if request.asymmetric else None,
        "smooth": True if request.smooth else None,
        "alpha": request.alpha,
        "keep": request.keep or None,
        "sparsity": request.sparsity,
        "scope": request.scope,
    }
    given = {k: v for k, v in options.items() if v is not None}
    if given.get("bits") == 8 and "group_size" not in given:
        given["group_size"] = 0  # gptq8 is per output channel
    return given


def build_configs(request: CompressRequest) -> list[CompressConfig]:
    """The configs a request describes, in order; options need a single technique."""
    names = [n.strip() for n in request.technique.split("+")]
    if len(names) == 1:
        return [build_config(request)]
    if any(not n for n in names):
        raise ConfigError(
            f"{{technique}} {request.technique!r} has an empty step; write e.g. wanda50+int8",
            field="technique",
            value=request.technique,
        )
    if _options(request):
        raise ConfigError(
            "options such as {bits}, {sparsity} or {keep} apply to a single technique; spell the steps as variant names"
            " (e.g. wanda60+int4-g64)",
            field="technique",
            value=request.technique,
        )
    return [config_from_name(n) for n in names]


def build_config(request: CompressRequest) -> CompressConfig:
    """The config a request describes; an option that does not apply to the technique is an error."""
    base = CONFIGS[request.technique]() if request.technique in CONFIGS else config_from_name(request.technique)
    fields = {f.name for f in dataclasses.fields(base)}
    given = _options(request)
    wrong = sorted(k for k in given if k not in fields)
    if wrong:
        names = ", ".join("{" + k.replace("symmetric", "asymmetric") + "}" for k in wrong)
        raise ConfigError(
            f"{names} does not apply to {base.technique}", field=wrong[0].replace("symmetric", "asymmetric")
        )
    return dataclasses.replace(base, **given)


def run_compress(request: CompressRequest, progress: Progress = no_progress) -> dict[str, Any]:
    import torch

    from ..evaluate.memory import model_stats
    from ..models.corpus import default_corpus, load_text_file
    from ..models.load import load_model, resolve_device, resolve_model
    from .calibration import calibration_ids
    from .recover import record_recovery, recover_
    from .registry import check_device, compress_
    from .store import check_out, save

    configs = build_configs(request)
    check_out(request.out)
    device = resolve_device(request.device)
    plans = [check_device(config, device) for config in configs]
    spec = resolve_model(request.model, offline=request.offline)
    if spec.kind == "compressed":
        raise ConfigError(
            f"{{model}} {request.model} is already compressed by wattlm ({spec.source_format}); start from the original"
            " model and chain the steps: {technique} wanda50+int8",
            field="model",
        )
    calib_corpus = None
    if (
        any(c.calibrated for c in configs) or request.recover_steps
    ):  # read the text before the (slow) model load, so a bad file fails fast
        calib_corpus = (
            load_text_file(request.calib_text) if request.calib_text else default_corpus(offline=request.offline)
        )

    progress(f"loading {spec.name} ({spec.source_format})")
    model, tokenizer = load_model(
        spec,
        dtype=request.dtype,
        device=str(device),
        trust_remote_code=request.trust_remote_code,
        offline=request.offline,
    )
    before = model_stats(model)
    calibration, calib_info = None, None
    if calib_corpus is not None:
        skip = 0 if request.calib_text else EVAL_TOKENS_SKIPPED
        calibration, calib_info = calibration_ids(
            tokenizer, calib_corpus, request.calib_samples, request.seq_len, skip_tokens=skip
        )
        progress(f"calibration: {calib_info['samples']} × {request.seq_len} tokens of {calib_info['text']}")

    steps = []
    for config, kernel_plan in zip(configs, plans):
        progress(f"compressing: {config.name}")
        t0 = time.perf_counter()
        with torch.no_grad():
            record = compress_(model, config, calibration=calibration if config.calibrated else None)
        if calib_info is not None and config.calibrated:
            record["details"]["calibration"] = calib_info
        steps.append(
            {
                "name": config.name,
                "config": config.to_dict(),
                "layers": len(record["modules"]),
                "kernel": kernel_plan.to_dict(),
                "details": record["details"],
                "seconds": time.perf_counter() - t0,
            }
        )
    if request.recover_steps:
        progress(f"recovery fine-tuning: {request.recover_steps} steps")
        t0 = time.perf_counter()
        result = recover_(model, calibration, steps=request.recover_steps)
        record_recovery(model, result)
        steps.append(
            {
                "name": f"recover{request.recover_steps}",
                "config": None,
                "layers": 0,
                "kernel": None,
                "details": result,
                "seconds": time.perf_counter() - t0,
            }
        )
    model.config.wattlm_source = {"model": spec.name, "source_format": spec.source_format}
    after = model_stats(model)
    save(model.to("cpu"), request.out, tokenizer)
    last = steps[-1] if steps[-1]["config"] is not None else steps[-2]
    return {
        "name": "+".join(s["name"] for s in steps),
        "steps": steps,
        "config": last["config"],
        "model": spec.name,
        "source_format": spec.source_format,
        "layers": sum(s["layers"] for s in steps),
        "kernel": last["kernel"],
        "warnings": [f"{c.name}: {p.warning()}" for c, p in zip(configs, plans) if p.warning()],
        "details": last["details"],
        "seconds": sum(s["seconds"] for s in steps),
        "params_before": before["params_total"],
        "params_after": after["params_total"],
        "params_nonzero": after["params_nonzero"],
        "bytes_before": before["model_bytes"],
        "bytes_after": (request.out / "model.safetensors").stat().st_size,
        "out": str(request.out),
    }
