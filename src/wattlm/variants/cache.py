"""Built llama.cpp variants kept on disk: a variant that took minutes to calibrate (GPTQ onto
llama.cpp's blocks) is built once and served from its file afterwards.

The key is everything the file depends on: the model as stored (each file's resolved path, size
and modification time: a changed file is a new model; a hub id by its name), the variant spec, the
calibration (text name and SHA-256, windows, their length, the tokens skipped, the seed) for a
calibrated variant, and the wattlm version that built it. A folder per key under
`<cache>/variants/` holds `model.gguf` and `built.json` (the key's inputs and what the build
recorded); it appears whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError
from ..models.load import ModelSpec
from .spec import resolve
from .step import Context


@dataclass(frozen=True)
class Calibration:
    """Where a calibrated variant's calibration windows come from: `wattlm bench`'s defaults unless
    given (the windows after the tokens bench scores, so they are not the evaluated text)."""

    text: str | None = None  # a UTF-8 file; None: the default text, after `skip_tokens`
    samples: int = 128
    seq_len: int = 512
    skip_tokens: int = 8192  # bench's max_tokens: the evaluated tokens the windows must not overlap
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in (("calib_samples", self.samples), ("calib_seq_len", self.seq_len)):
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{{{name}}} must be a whole number ≥ 1, got {value!r}", field=name)
        if self.text is not None and not Path(self.text).is_file():
            raise ConfigError(f"{{calib_text}} {self.text} is not a file", field="calib_text")

    @classmethod
    def from_bench_config(cls, config: dict[str, Any]) -> Calibration:
        """The calibration a `wattlm bench` run used (its run.json `config`)."""
        base = cls()
        return cls(
            text=config.get("calib_text"),
            samples=int(config.get("calib_samples") or base.samples),
            seq_len=int(config.get("seq_len") or base.seq_len),
            skip_tokens=0 if config.get("calib_text") else int(config.get("max_tokens") or base.skip_tokens),
        )


def cache_folder() -> Path:
    from ..models.assets import cache_root

    return cache_root() / "variants"


def _stored(spec: ModelSpec) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of the files the model is stored in."""
    where = Path(spec.location)
    if where.is_file():
        files = [where]
    elif where.is_dir():
        files = sorted(p for p in where.rglob("*") if p.is_file())
    else:  # a hub id: its files are in the hub's cache, named by revision
        return [(spec.location, 0, 0)]
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def key_of(spec: ModelSpec, variant: str, calibration: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(the cache key, the inputs it is the hash of)."""
    inputs = {
        "model": _stored(spec),  # the files, however the model was named (the default, a path, a link)
        "variant": variant,
        "calibration": calibration,
        "wattlm": __version__,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]
    return digest, inputs


def built_gguf(
    spec: ModelSpec,
    variant: str,
    *,
    threads: int,
    calibration: Calibration | None = None,
    offline: bool = False,
    log: Any = None,
) -> tuple[Path, dict[str, Any]]:
    """The GGUF file of `variant` built from `spec` (a variant that ends in a llama.cpp export),
    from the cache, or built now and cached. Returns (the file, its built.json record)."""
    built = resolve(variant)
    if built.engine != "llamacpp" or any(s.alone for s in built.steps):
        raise ConfigError(
            f"{{variant}} {variant} does not end in a llama.cpp export (gguf-<type>, gguf-gptq-<type>)",
            field="variant",
        )
    calibration = (calibration or Calibration()) if built.calibrated else None
    corpus = _corpus(calibration, offline) if calibration is not None else None
    described = None
    if calibration is not None and corpus is not None:
        described = {**asdict(calibration), "text_name": corpus.name, "text_sha256": corpus.sha256}
    key, inputs = key_of(spec, variant, described)
    folder = cache_folder() / key
    record_path = folder / "built.json"
    if (folder / "model.gguf").is_file() and record_path.is_file():
        return folder / "model.gguf", json.loads(record_path.read_text())
    if log is not None:
        log(f"building {variant} of {spec.name} (once; cached in {folder})")
    import torch

    from ..fileio import atomic_folder

    torch.set_num_threads(threads)
    model, tokenizer = load_stored(spec, offline=offline)
    ids = None
    if calibration is not None and corpus is not None:
        from ..compress.calibration import calibration_ids

        c = calibration
        ids = calibration_ids(tokenizer, corpus, c.samples, c.seq_len, skip_tokens=c.skip_tokens, seed=c.seed)[0]
    source = Path(spec.location) if spec.kind in ("gguf", "default") else None
    context = Context(
        device=torch.device("cpu"),
        calibration=ids,
        tokenizer=tokenizer,
        model_name=spec.name,
        source_gguf=source,
        threads=threads,
    )
    engine = built.build(model.eval(), context)  # a llama.cpp model on a temporary file
    try:
        record = {
            "key": key,
            "inputs": inputs,
            "calibration": asdict(calibration) if calibration is not None else None,
            "compression": engine.compression,
        }
        with atomic_folder(folder) as tmp:
            shutil.copyfile(engine.path, tmp / "model.gguf")
            (tmp / "built.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    finally:
        engine.close()
    return folder / "model.gguf", record


def load_stored(spec: ModelSpec, *, offline: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) as stored: fp32 (a .gguf de-quantized), or a `wattlm compress` folder as saved."""
    if spec.kind == "compressed":
        from ..compress.store import load as load_compressed

        model, tokenizer = load_compressed(spec.location)
    else:
        from ..models.load import load_model

        model, tokenizer = load_model(spec, offline=offline)
    if tokenizer is None:
        raise ConfigError(f"{spec.location} has no tokenizer files; save them beside the model", field="model")
    return model, tokenizer


def _corpus(c: Calibration, offline: bool) -> Any:
    from ..models.corpus import default_corpus, load_text_file

    return load_text_file(c.text) if c.text is not None else default_corpus(offline=offline)
