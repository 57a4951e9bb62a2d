"""Export a model to a GGUF file of a given type: float GGUF (gguf_export) → llama.cpp's quantizer;
or, for `gptq-<type>`, GPTQ calibrated onto that type's blocks (compress.gguf_gptq) written directly.

Everything is written in a temporary folder beside the target and renamed into place at the end,
so a failed export leaves nothing behind and never replaces an existing file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..compress.gguf_blocks import BLOCKS, FORMATS
from ..errors import ConfigError, InvalidInputError, WattlmError
from . import gguf_export, gguf_vocab, llamacpp

CALIBRATED = tuple(f"gptq-{t}" for t in FORMATS)  # gptq-q4_0, ...: calibrated onto llama.cpp's blocks


def check_type(quant: str) -> str:
    if quant in CALIBRATED:
        return quant
    if quant not in llamacpp.QUANTS:
        raise InvalidInputError(
            f"GGUF type {quant!r} is not one of {', '.join(llamacpp.QUANTS)} (llama.cpp's quantizer) or"
            f" {', '.join(CALIBRATED)} (calibrated by wattlm)"
        )
    return quant


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
    check_type(quant)
    if quant in CALIBRATED and getattr(model.get_input_embeddings(), BLOCKS, None) is None:
        raise InvalidInputError(
            f"{quant} needs the model calibrated onto its blocks first (compress.gguf_gptq.gptq_to_blocks_)"
        )
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
        if quant not in gguf_export.FLOAT_FILE_TYPES and quant not in CALIBRATED:
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
        "quantizer": (
            "llama.cpp llama_model_quantize"
            if final is not float_path
            else "wattlm GPTQ onto llama.cpp's blocks"
            if quant in CALIBRATED
            else None
        ),
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
    calib_text: Path | None = None,
    calib_samples: int = 128,
    seq_len: int = 512,
    size_budget_mib: float | None = None,
) -> dict[str, Any]:
    """`wattlm export`: load what `model` names (hub id, folder, `wattlm compress` or `wattlm train`
    output, .gguf, or the default), export it, and check that llama.cpp loads the file. A `gptq-<type>`
    is calibrated first on `calib_samples` windows of `seq_len` tokens: of `calib_text`, or of the
    default text after the tokens `wattlm bench` scores; `size_budget_mib` keeps the most sensitive
    weights at Q8_0 within that many MiB of weights (compress.gguf_gptq)."""
    from ..models.load import load_model, resolve_model

    if fmt != "gguf":
        raise ConfigError(f"{{fmt}} {fmt!r}: only gguf is written", field="fmt")
    check_type(quant)
    if calib_samples < 1 or seq_len < 2:
        raise ConfigError("{calib_samples} must be ≥ 1 and {seq_len} ≥ 2", field="calib_samples", value=calib_samples)
    if size_budget_mib is not None and (quant not in CALIBRATED or not size_budget_mib > 0):
        raise ConfigError(
            "{size_budget} goes with a gptq-* type and must be > 0 MiB, e.g. --quant gptq-q4_0 --size-budget 90",
            field="size_budget",
        )
    if calib_text is not None and not Path(calib_text).is_file():
        raise ConfigError(f"{{calib_text}} {calib_text} is not a file", field="calib_text")
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
    calibration = None
    if quant in CALIBRATED:
        budget = None if size_budget_mib is None else int(size_budget_mib * 2**20)
        calibration = _calibrate(loaded, tokenizer, quant, calib_text, calib_samples, seq_len, offline, budget)
    info = export_gguf(loaded, tokenizer, out, quant, name=spec.name, source_gguf=source, threads=threads)
    if calibration is not None:
        info["calibration"] = calibration
    del loaded
    engine = llamacpp.LlamaCppModel(out, threads=threads or os.cpu_count() or 1)  # the file loads in llama.cpp
    info.update(source=spec.__dict__, loaded_params=engine.stats()["params_total"])
    engine.close()
    return info


def _calibrate(
    model: Any,
    tokenizer: Any,
    quant: str,
    calib_text: Path | None,
    samples: int,
    seq_len: int,
    offline: bool,
    budget_bytes: int | None,
) -> dict[str, Any]:
    from ..compress.calibration import calibration_ids
    from ..compress.gguf_gptq import gptq_to_blocks_
    from ..compress.run import EVAL_TOKENS_SKIPPED
    from ..models.corpus import default_corpus, load_text_file

    corpus = load_text_file(str(calib_text)) if calib_text is not None else default_corpus(offline=offline)
    skip = 0 if calib_text is not None else EVAL_TOKENS_SKIPPED
    ids, info = calibration_ids(tokenizer, corpus, samples, seq_len, skip_tokens=skip)
    info.update(gptq_to_blocks_(model, quant.removeprefix("gptq-"), ids, size_budget_bytes=budget_bytes))
    return info
