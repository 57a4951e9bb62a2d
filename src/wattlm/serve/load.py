"""Load what `wattlm serve` serves: a GGUF as it is (`gguf-source`, the default for a .gguf), or any
model `wattlm bench` reads (a folder, a `wattlm compress` folder, a GGUF) exported through a bench
variant that ends in llama.cpp (`gguf-q4_0`, `int8+gguf-q8_0`, ...). Loaded once, before serving."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engines.llamacpp_batch import LlamaCppBatch
from ..errors import ConfigError
from ..models.load import ModelSpec, resolve_model
from .chat import ChatTemplate
from .config import ServeConfig


@dataclass
class Loaded:
    engine: LlamaCppBatch
    name: str  # what /v1/models lists and requests name
    chat: ChatTemplate | None
    source: dict[str, Any] = field(default_factory=dict)  # model, variant, file: for /health and the ledger

    def close(self) -> None:
        self.engine.close()
        self.engine.model.close()


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def spec_of(config: ServeConfig) -> ModelSpec:
    """What {model} names, checked before anything loads (the default model is fetched once)."""
    spec = resolve_model(config.model)
    variant = config.variant or ("gguf-source" if spec.kind in ("gguf", "default") else None)
    if variant is None:
        raise ConfigError(
            "{model} is not a GGUF: give a {variant} that exports it to llama.cpp, e.g. gguf-q8_0 or gguf-q4_0",
            field="variant",
        )
    if variant == "gguf-source" and spec.kind not in ("gguf", "default"):
        raise ConfigError("{variant} gguf-source serves a .gguf file as it is; {model} is not one", field="variant")
    return spec


def load(config: ServeConfig, spec: ModelSpec) -> Loaded:
    from ..engines.llamacpp import LlamaCppModel

    threads = config.threads or default_threads()
    variant = config.variant or "gguf-source"
    if variant == "gguf-source":
        model = LlamaCppModel(spec.location, threads=threads)
    else:
        model = _export(spec, variant, threads)
    engine = LlamaCppBatch(model, max_seqs=config.max_batch, seq_ctx=config.seq_ctx, max_tokens=config.step_tokens)
    template = engine.metadata("tokenizer.chat_template")
    chat = None
    if template:
        bos = engine.token_text(engine.bos)
        eos_id = engine.metadata("tokenizer.ggml.eos_token_id")
        chat = ChatTemplate(template, bos_token=bos, eos_token=engine.token_text(int(eos_id)) if eos_id else "")
    source = {"model": spec.location, "variant": variant, "file": str(model.path), "source_format": spec.source_format}
    return Loaded(engine, spec.name, chat, source)


def _export(spec: ModelSpec, variant: str, threads: int) -> Any:
    """A bench variant that ends in llama.cpp, built from the fp32 model."""
    import torch

    from ..bench.step import Context
    from ..bench.variants import resolve
    from ..models.load import load_model

    built = resolve(variant, torch.device("cpu"))
    if built.engine != "llamacpp":
        raise ConfigError(
            f"{{variant}} {variant} runs in transformers; wattlm serve runs llama.cpp: end it with gguf-<type>",
            field="variant",
        )
    if built.calibrated:
        raise ConfigError(
            f"{{variant}} {variant} needs calibration text: export it with `wattlm export` and serve the .gguf",
            field="variant",
        )
    if spec.kind == "compressed":
        from ..compress.store import load as load_compressed

        model, tokenizer = load_compressed(spec.location)
    else:
        model, tokenizer = load_model(spec)
    torch.set_num_threads(threads)
    source = Path(spec.location) if spec.kind in ("gguf", "default") else None
    context = Context(
        device=torch.device("cpu"), tokenizer=tokenizer, model_name=spec.name, source_gguf=source, threads=threads
    )
    return built.build(model.eval(), context)  # the gguf step keeps its file until the engine closes
