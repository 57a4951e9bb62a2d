"""Load what `wattlm serve` serves, once, before serving: any model `wattlm bench` reads (a .gguf, a
model folder, a `wattlm compress` folder) as any bench variant.

- llama.cpp (`--engine llamacpp`): a .gguf as it is (`gguf-source`, the default for a .gguf), or a
  variant that ends in an export to llama.cpp (`gguf-q4_0`, `struct25+gguf-q8_0`, and calibrated
  ones such as `gguf-gptq-iq4_nl-mix95`), built once and kept in the variant cache (variants.cache).
- transformers (`--engine hf`): a variant that runs in PyTorch (`fp32`, the default for a folder;
  `bf16`, `int8`, `struct25+bf16`); a .gguf is de-quantized to fp32 first, as `wattlm bench` does.

With no `--engine`, the variant says which. A calibrated variant in transformers is refused: serve it
through llama.cpp, or save it with `wattlm compress` and serve the folder.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models.load import ModelSpec, resolve_model
from .chat import ChatTemplate
from .config import ServeConfig


@dataclass
class Loaded:
    engine: Any  # LlamaCppBatch or HFBatch: the scheduler's Engine
    name: str  # what /v1/models lists and requests name
    chat: Any  # .render(messages) -> prompt text, or None when the model has no chat template
    source: dict[str, Any] = field(default_factory=dict)  # model, variant, file: for /health
    _close: Any = None

    def close(self) -> None:
        self.engine.close()
        if self._close is not None:
            self._close()


@dataclass(frozen=True)
class Plan:
    spec: ModelSpec
    engine: str
    variant: str


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def plan(config: ServeConfig) -> Plan:
    """Which model, engine and variant, checked before anything loads (the default model is fetched)."""
    spec = resolve_model(config.model)
    is_gguf = spec.kind in ("gguf", "default")
    variant = config.variant
    engine = config.engine
    if variant is None:
        if engine == "hf" or (engine is None and not is_gguf):
            variant = "fp32"
        elif is_gguf:
            variant = "gguf-source"
        else:
            raise ConfigError(
                "{model} is not a GGUF: give a {variant} that exports it to llama.cpp (e.g. gguf-q8_0), or {engine} hf",
                field="variant",
            )
    if variant == "gguf-source" and not is_gguf:
        raise ConfigError("{variant} gguf-source serves a .gguf file as it is; {model} is not one", field="variant")
    built = _variant(variant)
    wanted = built.engine if engine is None else engine
    if built.engine != wanted:
        raise ConfigError(
            f"{{variant}} {variant} runs in {'llama.cpp' if built.engine == 'llamacpp' else 'transformers'}, not in"
            f" {{engine}} {wanted}: end it with gguf-<type> for llama.cpp, or leave the gguf step out for hf",
            field="variant",
        )
    if built.calibrated and wanted != "llamacpp":
        raise ConfigError(
            f"{{variant}} {variant} needs calibration text: serve a gguf-gptq-<type> variant through llama.cpp, or"
            " save it with `wattlm compress` and serve the folder",
            field="variant",
        )
    return Plan(spec, wanted, variant)


def _variant(spec: str) -> Any:
    from ..variants import resolve

    return resolve(spec)


def load(config: ServeConfig, p: Plan) -> Loaded:
    threads = config.threads or default_threads()
    source = {"model": p.spec.location, "variant": p.variant, "source_format": p.spec.source_format}
    if p.engine == "llamacpp":
        return _llamacpp(config, p, threads, source)
    return _hf(config, p, threads, source)


def _llamacpp(config: ServeConfig, p: Plan, threads: int, source: dict[str, Any]) -> Loaded:
    from ..engines.llamacpp import LlamaCppModel
    from ..engines.llamacpp_batch import LlamaCppBatch

    if p.variant == "gguf-source":
        model = LlamaCppModel(p.spec.location, threads=threads)
    else:
        from ..variants.cache import built_gguf

        path, record = built_gguf(
            p.spec, p.variant, threads=threads, calibration=config.calibration, log=lambda m: print(m, file=sys.stderr)
        )
        source = source | {"variant_cache": str(path.parent), "calibration": record.get("calibration")}
        model = LlamaCppModel(path, threads=threads)
    engine = LlamaCppBatch(
        model,
        max_seqs=config.max_batch,
        seq_ctx=config.seq_ctx,
        max_tokens=config.engine_tokens,
        ubatch_tokens=config.step_tokens,
    )
    template = engine.metadata("tokenizer.chat_template")
    chat = None
    if template:
        eos_id = engine.metadata("tokenizer.ggml.eos_token_id")
        eos = engine.token_text(int(eos_id)) if eos_id else ""
        chat = ChatTemplate(template, bos_token=engine.token_text(engine.bos), eos_token=eos)
    return Loaded(engine, p.spec.name, chat, source | {"file": str(model.path)}, model.close)


def _hf(config: ServeConfig, p: Plan, threads: int, source: dict[str, Any]) -> Loaded:
    from ..engines.hf_batch import HFBatch

    model, tokenizer = _build(p, threads)
    engine = HFBatch(
        model,
        tokenizer,
        max_seqs=config.max_batch,
        seq_ctx=config.seq_ctx,
        max_tokens=config.engine_tokens,
        threads=threads,
    )
    chat = _HFChat(tokenizer) if getattr(tokenizer, "chat_template", None) else None
    return Loaded(engine, p.spec.name, chat, source)


class _HFChat:
    """The tokenizer's own chat template (transformers renders it in Jinja's sandbox)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def render(self, messages: list[dict[str, Any]]) -> str:
        try:
            return str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        except Exception as e:  # jinja2's TemplateError and the tokenizer's own ValueError
            raise ValueError(f"the model's chat template refused these messages: {e}") from e


def _build(p: Plan, threads: int) -> tuple[Any, Any]:
    """(the transformers variant `p.variant` built from the model as stored, its tokenizer)."""
    import torch

    from ..variants import Context
    from ..variants.cache import load_stored

    torch.set_num_threads(threads)
    model, tokenizer = load_stored(p.spec)
    source = Path(p.spec.location) if p.spec.kind in ("gguf", "default") else None
    context = Context(
        device=torch.device("cpu"), tokenizer=tokenizer, model_name=p.spec.name, source_gguf=source, threads=threads
    )
    return _variant(p.variant).build(model.eval(), context).eval(), tokenizer
