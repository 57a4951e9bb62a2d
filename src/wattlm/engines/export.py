"""Export a model to a GGUF file of a given type: float GGUF (gguf_export) → llama.cpp's quantizer.

Everything is written in a temporary folder beside the target and renamed into place at the end,
so a failed export leaves nothing behind and never replaces an existing file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidInputError, WattlmError
from . import gguf_export, gguf_vocab, llamacpp


def check_target(out: Path) -> None:
    from ..fileio import check_writable

    if out.suffix != ".gguf":
        raise ConfigError(f"{{out}} {out}: give a file name ending in .gguf", field="out")
    if out.exists():
        raise ConfigError(f"{{out}} {out} already exists; choose another file name or delete it", field="out")
    check_writable(out, "--out")


def _hf_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def pick_pre(model: Any, tokenizer: Any, folder: Path, probe: str, want: list[int]) -> tuple[str, bool]:
    """The first llama.cpp pre-tokenizer under which llama.cpp tokenizes `probe` into `want` (the
    Hugging Face tokenizer's ids); `default` and False when none does."""
    for pre in gguf_vocab.PRE_CANDIDATES:
        path = folder / f"vocab-{pre}.gguf"
        gguf_export.write_vocab_only(model, path, gguf_vocab.hf_vocab(tokenizer, pre))
        try:
            got = llamacpp.vocab_only_tokenize(path, probe)
        except WattlmError:  # a name this llama.cpp build does not know: not the one
            continue
        finally:
            path.unlink()
        if got == want:
            return pre, True
    return "default", False


def export_gguf(
    model: Any,
    tokenizer: Any,
    out: Path,
    quant: str,
    *,
    name: str,
    source_gguf: Path | None = None,
    threads: int | None = None,
    probe_text: str = "",
) -> dict[str, Any]:
    """Write `model` as a `quant` GGUF at `out` (atomically) and return what was written.

    The tokenizer comes from `source_gguf` when the model was loaded from one (exact copy), else
    from `tokenizer` (byte-level BPE; its llama.cpp pre-tokenizer found by probing). `probe_text`
    (e.g. some of the user's text) is tokenized by both as a check; the result says whether they agree.
    """
    llamacpp.check_quant(quant)
    gguf_export.check_exportable(model.config)
    llamacpp.lib()  # the engine is needed to quantize and to check the file: fail before writing
    threads = threads or os.cpu_count() or 1
    probe = gguf_vocab.PROBE_TEXT + "\n" + probe_text[:4000]
    want = _hf_ids(tokenizer, probe)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        folder = Path(tmp)
        if source_gguf is not None:
            vocab: dict[str, Any] = {"from": str(source_gguf)}
            add_vocab = gguf_vocab.copy_vocab(source_gguf)
        else:
            pre, found = pick_pre(model, tokenizer, folder, probe, want)
            add_vocab, vocab = (
                gguf_vocab.hf_vocab(tokenizer, pre),
                {"from": "Hugging Face tokenizer", "pre": pre, "pre_found": found},
            )
        float_type = "f16" if quant == "f16" else "f32"
        float_path = folder / f"model-{float_type}.gguf"
        s = gguf_export.write_float_gguf(model, float_path, float_type, name, add_vocab)
        final = float_path
        if quant not in gguf_export.FLOAT_FILE_TYPES:
            final = folder / f"model-{quant}.gguf"
            llamacpp.quantize(float_path, final, quant, threads)
        vocab["probe_tokens"] = len(want)
        vocab["probe_agrees"] = llamacpp.vocab_only_tokenize(final, probe) == want
        os.replace(final, out)
    return {
        "file": str(out),
        "type": quant,
        "bytes": out.stat().st_size,
        "architecture": gguf_export.ARCHITECTURES[model.config.model_type],
        "layers": s.layers,
        "heads": gguf_export.one_or_list(s.heads),
        "kv_heads": gguf_export.one_or_list(s.kv_heads),
        "ff": gguf_export.one_or_list(s.ff),
        "tokenizer": vocab,
        "quantizer": "llama.cpp llama_model_quantize" if final is not float_path else None,
    }


def run_export(
    model: str | None,
    out: Path,
    quant: str,
    *,
    fmt: str = "gguf",
    offline: bool = False,
    trust_remote_code: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """`wattlm export`: load what `model` names (hub id, folder, `wattlm compress` or `wattlm train`
    output, .gguf, or the default), export it, and check that llama.cpp loads the file."""
    from ..models.load import load_model, resolve_model

    if fmt != "gguf":
        raise ConfigError(f"{{fmt}} {fmt!r}: only gguf is written", field="fmt")
    llamacpp.check_quant(quant)
    check_target(out)
    llamacpp.lib()
    spec = resolve_model(model, offline=offline)
    if spec.kind == "compressed":
        from ..compress.store import load

        loaded, tokenizer = load(spec.location)
    else:
        loaded, tokenizer = load_model(spec, trust_remote_code=trust_remote_code, offline=offline)
    gguf_export.check_exportable(loaded.config)
    if tokenizer is None:
        raise InvalidInputError(
            f"{spec.location} has no tokenizer files; the GGUF needs one: save the tokenizer beside the model"
        )
    source = Path(spec.location) if spec.kind in ("gguf", "default") else None
    info = export_gguf(loaded, tokenizer, out, quant, name=spec.name, source_gguf=source, threads=threads)
    del loaded
    engine = llamacpp.LlamaCppModel(out, threads=threads or os.cpu_count() or 1)  # the file loads in llama.cpp
    info.update(source=spec.__dict__, loaded_params=engine.stats()["params_total"])
    engine.close()
    return info
