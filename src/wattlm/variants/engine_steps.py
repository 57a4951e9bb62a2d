"""Bench steps that move the variant into llama.cpp: `gguf-<type>` (or `llamacpp:<type>`) exports the
model as built so far (after struct25, share2, int8, ...) to a GGUF of that type and runs it in
llama.cpp; `gguf-source` runs the model's own GGUF file as it is (the file a user would pick today).
Either is the last step of a variant; from then on the harness talks to the engine model."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engines.export import CALIBRATED
from ..engines.llamacpp import QUANTS
from ..errors import ConfigError
from .step import Context, Step

# In the form of compress.kernels.KernelPlan.to_dict(), which the report reads
KERNEL = {
    "scheme": "gguf",
    "device": "cpu",
    "kernel": "llama.cpp",
    "fast": True,
    "note": "llama.cpp's CPU kernels for the file's types",
}


def _cpu_only(runtime: str, variants: str, lib: Callable[[], Any]) -> Callable[[Any], str | None]:
    """A preflight for an engine that runs on the CPU only: refuse another device, and call `lib()`,
    which says how to install the engine's extra, before anything loads."""

    def preflight(device: Any) -> str | None:
        if device.type != "cpu":
            raise ConfigError(
                f"wattlm runs {runtime} on the CPU only; the {variants} variants need {{device}} cpu (not {device})",
                field="device",
            )
        lib()
        return None

    return preflight


def _llamacpp_lib() -> Any:
    from ..engines.llamacpp import lib

    return lib()


def _ort_lib() -> Any:
    from ..engines.ort import lib

    return lib()


_preflight = _cpu_only("llama.cpp", "gguf", _llamacpp_lib)
_ort_preflight = _cpu_only("ONNX Runtime GenAI", "ort", _ort_lib)


def _in_llamacpp(model: Any, context: Context, quant: str) -> Any:
    """Export `model` to a `quant` GGUF in a temporary folder (removed with the engine) and load it."""
    from ..engines.export import export_gguf
    from ..engines.llamacpp import LlamaCppModel

    tmp = tempfile.TemporaryDirectory(prefix="wattlm-gguf-")
    path = Path(tmp.name) / f"model-{quant}.gguf"
    try:
        info = export_gguf(
            model,
            context.tokenizer,
            path,
            quant,
            name=context.model_name or "model",
            source_gguf=context.source_gguf,
            threads=context.threads,
            probe_text=context.probe_text,
        )
        engine = LlamaCppModel(path, threads=context.threads, cleanup=tmp.cleanup)
    except BaseException:
        tmp.cleanup()
        raise
    done = getattr(model.config, "wattlm_compression", None) or []
    engine.compression = [{k: r[k] for k in ("name", "kernel", "details")} for r in done]
    engine.compression.append({"name": f"gguf-{quant}", "kernel": KERNEL, "details": info})
    return engine


def _gguf(match: Any) -> Step:
    quant = match[1]

    def apply(model: Any, context: Context) -> Any:
        return _in_llamacpp(model, context, quant)

    doc = f"export to a {quant.upper()} GGUF (llama.cpp's quantizer) and run it in llama.cpp"
    return Step(f"gguf-{quant}", apply, doc=doc, engine="llamacpp", preflight=_preflight)


def _gguf_gptq(match: Any) -> Step:
    kind, budget_mib = match[1], match[2]
    quant = f"gptq-{kind}"

    def apply(model: Any, context: Context) -> Any:
        from ..compress.gguf_gptq import gptq_to_blocks_

        budget = None if budget_mib is None else int(budget_mib) * 2**20
        info = gptq_to_blocks_(model, kind, context.calibration, size_budget_bytes=budget)
        engine = _in_llamacpp(model, context, quant)
        engine.compression[-1]["details"]["calibrated"] = info
        return engine

    doc = f"GPTQ onto llama.cpp's {kind.upper()} blocks, written straight into a GGUF, run in llama.cpp" + (
        f"; the most sensitive layers at Q8_0 within {budget_mib} MiB of weights" if budget_mib else ""
    )
    return Step(match[0], apply, doc=doc, engine="llamacpp", preflight=_preflight, calibrated=True)


def _source(match: Any) -> Step:
    def apply(model: Any, context: Context) -> Any:
        from ..engines.llamacpp import LlamaCppModel
        from ..models.load import gguf_format

        if context.source_gguf is None:
            raise ConfigError(
                "variant gguf-source runs the model's own .gguf file, but {model} is not one; use gguf-<type> to"
                " export it",
                field="model",
            )
        engine = LlamaCppModel(context.source_gguf, threads=context.threads)
        engine.compression = [
            {
                "name": "gguf-source",
                "kernel": KERNEL,
                "details": {"file": str(context.source_gguf), "type": gguf_format(context.source_gguf)},
            }
        ]
        return engine

    return Step(
        "gguf-source",
        apply,
        doc="the model's own GGUF file, unchanged, in llama.cpp",
        engine="llamacpp",
        preflight=_preflight,
        alone=True,
    )


ORT_KERNEL = {
    "scheme": "onnx",
    "device": "cpu",
    "kernel": "onnxruntime",
    "fast": True,
    "note": "ONNX Runtime's CPU kernels (MatMulNBits for int4/int8 weights)",
}


def _ort(match: Any) -> Step:
    precision, head = match[1], match[2]

    def apply(model: Any, context: Context) -> Any:
        from ..engines.ort import OrtModel, build
        from ..errors import InvalidInputError

        done = getattr(model.config, "wattlm_compression", None) or []
        if done:
            names = ", ".join(r["name"] for r in done)
            raise InvalidInputError(
                f"ort variants convert a plain transformers model; this one was changed by {names}: use gguf-TYPE"
                " for it"
            )
        params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        tmp = tempfile.TemporaryDirectory(prefix="wattlm-ort-")
        try:
            info = build(
                model, context.tokenizer, Path(tmp.name) / "model", precision, threads=context.threads,
                head_int8=bool(head),
            )  # fmt: skip
            engine = OrtModel(info["folder"], threads=context.threads, params_total=params, cleanup=tmp.cleanup)
        except BaseException:
            tmp.cleanup()
            raise
        engine.compression = [{"name": match[0], "kernel": ORT_KERNEL, "details": info}]
        return engine

    doc = (
        f"convert with onnxruntime-genai's model builder ({precision} weights{', 8-bit output layer' if head else ''})"
    )
    return Step(match[0], apply, doc=doc, engine="ort", preflight=_ort_preflight)


# Step names (regular expressions matched whole) → the Step they make.
STEPS = [
    (rf"(?:gguf-|llamacpp:)({'|'.join(QUANTS)})", _gguf),
    (rf"gguf-gptq-({'|'.join(t.removeprefix('gptq-') for t in CALIBRATED)})(?:-mix(\d+))?", _gguf_gptq),
    (r"gguf-source", _source),
    (r"ort-(fp32|int8|int4)(-head8)?", _ort),
]
