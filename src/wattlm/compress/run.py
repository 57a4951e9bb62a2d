"""`wattlm compress`: options → config → load → (calibrate) → quantize → save, every option checked
before the model loads and nothing written unless the whole model was quantized."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .config import CONFIGS, QuantConfig, config_from_name

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
    dtype: str = "fp32"
    calib_text: Path | None = None
    calib_samples: int = 128
    seq_len: int = 512
    device: str = "auto"
    trust_remote_code: bool = False
    offline: bool = False


def build_config(request: CompressRequest) -> QuantConfig:
    """The config a request describes; an option that does not apply to the technique is an error."""
    base = CONFIGS[request.technique]() if request.technique in CONFIGS else config_from_name(request.technique)
    options = {
        "bits": request.bits,
        "group_size": request.group_size,
        "symmetric": False if request.asymmetric else None,
        "smooth": True if request.smooth else None,
        "alpha": request.alpha,
        "keep": request.keep or None,
    }
    fields = {f.name for f in dataclasses.fields(base)}
    given = {k: v for k, v in options.items() if v is not None}
    if given.get("bits") == 8 and "group_size" not in given:
        given["group_size"] = 0  # gptq8 is per output channel
    wrong = sorted(k for k in given if k not in fields)
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-").replace("symmetric", "asymmetric") for k in wrong)
        raise InvalidInputError(f"{flags} does not apply to {base.technique}; see wattlm compress --help")
    return dataclasses.replace(base, **given)


def run_compress(request: CompressRequest, progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    import torch

    from ..evaluate.memory import model_stats
    from ..models.corpus import default_corpus, load_text_file
    from ..models.load import DTYPES, load_model, resolve_device, resolve_model
    from .calibration import calibration_ids
    from .registry import check_device, compress_
    from .store import check_out, save

    config = build_config(request)
    if request.dtype not in DTYPES:
        raise InvalidInputError(f"--dtype {request.dtype!r}: use one of {', '.join(DTYPES)}")
    if request.calib_samples < 1 or request.seq_len < 2:
        raise InvalidInputError("--calib-samples must be ≥ 1 and --seq-len ≥ 2")
    check_out(request.out)
    device = resolve_device(request.device)
    kernel_plan = check_device(config, device)
    spec = resolve_model(request.model, offline=request.offline)
    if spec.kind == "compressed":
        raise InvalidInputError(f"--model {request.model} is already compressed by wattlm ({spec.source_format}); start from the original model")
    calib_corpus = None
    if config.calibrated:  # read the text before the (slow) model load, so a bad file fails fast
        calib_corpus = load_text_file(request.calib_text) if request.calib_text else default_corpus(offline=request.offline)

    progress(f"loading {spec.name} ({spec.source_format})")
    model, tokenizer = load_model(spec, dtype=request.dtype, device=str(device), trust_remote_code=request.trust_remote_code, offline=request.offline)
    bytes_before = model_stats(model)["model_bytes"]
    calibration, calib_info = None, None
    if calib_corpus is not None:
        skip = 0 if request.calib_text else EVAL_TOKENS_SKIPPED
        calibration, calib_info = calibration_ids(tokenizer, calib_corpus, request.calib_samples, request.seq_len, skip_tokens=skip)
        progress(f"calibration: {calib_info['samples']} × {request.seq_len} tokens of {calib_info['text']}")

    progress(f"quantizing: {config.name}")
    t0 = time.perf_counter()
    with torch.no_grad():
        record = compress_(model, config, calibration=calibration)
    seconds = time.perf_counter() - t0
    if calib_info is not None:
        record["details"]["calibration"] = calib_info
    model.config.wattlm_compression[-1] = record
    model.config.wattlm_source = {"model": spec.name, "source_format": spec.source_format}
    save(model.to("cpu"), request.out, tokenizer)
    return {
        "name": config.name,
        "config": config.to_dict(),
        "model": spec.name,
        "source_format": spec.source_format,
        "layers": len(record["modules"]),
        "kernel": kernel_plan.to_dict(),
        "warnings": [w for w in [kernel_plan.warning()] if w],
        "details": record["details"],
        "seconds": seconds,
        "bytes_before": bytes_before,
        "bytes_after": (request.out / "model.safetensors").stat().st_size,
        "out": str(request.out),
    }
