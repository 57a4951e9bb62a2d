"""Training data: documents, duplicate removal, packing into rows, and a seeded order of batches.

The text splits into documents (paragraphs, lines or the whole text). The first documents, up to
`eval_windows × seq_len` tokens, are held out and scored before and after training; the rest are
training documents, read only as far as the run needs. Exact and near duplicates are dropped
(against the held-out documents too, so nothing evaluated is also trained on).

Packing concatenates documents (each ended by EOS) into rows of `seq_len` tokens. `position_ids`
restart at 0 at every document start, and transformers (≥ 4.53, `masking_utils`) turns restarting
positions into a block-diagonal causal mask when no attention mask is given: a token never attends
to another document. The first token of each document is not a label (it is not predictable from
the previous document).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

IGNORE = -100  # label value the loss skips
SHINGLE_WORDS = 5
NUM_PERM = 64
BANDS = 16  # LSH: 16 bands × 4 rows; a pair at Jaccard 0.8 shares a band with probability ≈ 1 − (1 − 0.8⁴)¹⁶ ≈ 0.9996
MERSENNE = (1 << 31) - 1


def split_documents(text: str, mode: str) -> list[str]:
    if mode == "whole":
        parts = [text]
    elif mode == "lines":
        parts = text.splitlines()
    else:
        parts = re.split(r"\n\s*\n", text)
    return [p.strip() for p in parts if p.strip()]


def _normal(text: str) -> str:
    return " ".join(text.casefold().split())


class Dedup:
    """Remembers the documents seen and says whether a new one repeats one of them.

    Near duplicates: MinHash over word 5-grams with banded LSH. Written here rather than taken from
    datasketch: it is ~30 lines with numpy, and its hashes (crc32, seeded permutations) are the same
    in every process, which DDP ranks need to drop the same documents.
    """

    def __init__(self, mode: str, threshold: float = 0.8, seed: int = 0) -> None:
        import numpy as np

        self.mode, self.threshold = mode, threshold
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, MERSENNE, NUM_PERM, dtype=np.int64)
        self._b = rng.integers(0, MERSENNE, NUM_PERM, dtype=np.int64)
        self._exact: set[bytes] = set()
        self._bands: list[dict[bytes, list[int]]] = [{} for _ in range(BANDS)]
        self._signatures: list[Any] = []
        self.dropped = {"exact": 0, "near": 0}

    def signature(self, text: str) -> Any:
        import numpy as np

        words = _normal(text).split()
        shingles = {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}
        h = np.array([zlib.crc32(s.encode()) & MERSENNE for s in shingles], dtype=np.int64)
        # (a·h + b) mod p: a, h < 2³¹, so the product fits in int64.
        return ((self._a[:, None] * h[None, :] + self._b[:, None]) % MERSENNE).min(axis=1)

    def is_duplicate(self, text: str) -> bool:
        """True if `text` repeats a document seen before; otherwise remember it."""
        if self.mode == "none":
            return False
        key = hashlib.sha1(_normal(text).encode()).digest()
        if key in self._exact:
            self.dropped["exact"] += 1
            return True
        self._exact.add(key)
        if self.mode != "near":
            return False
        sig = self.signature(text)
        rows = NUM_PERM // BANDS
        keys = [sig[b * rows : (b + 1) * rows].tobytes() for b in range(BANDS)]
        candidates = {i for b, k in enumerate(keys) for i in self._bands[b].get(k, ())}
        if any(float((self._signatures[i] == sig).mean()) >= self.threshold for i in candidates):
            self.dropped["near"] += 1
            return True
        for b, k in enumerate(keys):
            self._bands[b].setdefault(k, []).append(len(self._signatures))
        self._signatures.append(sig)
        return False


@dataclass
class Rows:
    """Training rows [R, seq_len]: ids, labels (IGNORE where no loss), and either restarting
    position ids (packed) or an attention mask (padded)."""

    input_ids: Any
    labels: Any
    position_ids: Any = None
    attention_mask: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def batch(self, index: Any) -> dict[str, Any]:
        out = {"input_ids": self.input_ids[index], "labels": self.labels[index]}
        if self.position_ids is not None:
            out["position_ids"] = self.position_ids[index]
        if self.attention_mask is not None:
            out["attention_mask"] = self.attention_mask[index]
        return out


def check_packing_supported() -> None:
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            "packing needs transformers ≥ 4.53 (attention kept inside each document); upgrade it or pass {no_pack}",
            field="no_pack",
        ) from e


def pack(docs: list[list[int]], seq_len: int, eos: int | None) -> Rows:
    """Documents (token ids) end to end, cut into rows; a document cut by a row end goes on at
    position 0 of the next row. The tail shorter than a row is dropped."""
    import torch

    ids: list[int] = []
    pos: list[int] = []
    for doc in docs:
        doc = doc + ([eos] if eos is not None else [])
        ids.extend(doc)
        pos.extend(range(len(doc)))
    rows = len(ids) // seq_len
    input_ids = torch.tensor(ids[: rows * seq_len], dtype=torch.long).reshape(rows, seq_len)
    position = torch.tensor(pos[: rows * seq_len], dtype=torch.long).reshape(rows, seq_len)
    starts = torch.zeros_like(position, dtype=torch.bool)
    starts[:, 1:] = position[:, 1:] <= position[:, :-1]  # a document starts where positions do not go up
    position = _restart_rows(position, starts)
    labels = input_ids.masked_fill(starts, IGNORE)
    return Rows(
        input_ids,
        labels,
        position_ids=position,
        info={"packed": True, "dropped_tail_tokens": len(ids) - rows * seq_len},
    )


def _restart_rows(position: Any, starts: Any) -> Any:
    """Positions counted from each row's first token up to its first document start."""
    import torch

    seq_len = position.shape[1]
    idx = torch.arange(seq_len).expand_as(position)
    first_start = torch.where(starts, idx, torch.full_like(idx, seq_len)).min(dim=1, keepdim=True).values
    return torch.where(idx < first_start, idx, position)


def pad(docs: list[list[int]], seq_len: int, pad_id: int) -> Rows:
    """One document per row (a longer one in several rows), padded at the end; pads carry no loss."""
    import torch

    pieces = [doc[i : i + seq_len] for doc in docs for i in range(0, len(doc), seq_len)]
    pieces = [p for p in pieces if len(p) > 1]  # a single token has nothing to predict
    if not pieces:
        return Rows(
            torch.zeros(0, seq_len, dtype=torch.long),
            torch.zeros(0, seq_len, dtype=torch.long),
            attention_mask=torch.zeros(0, seq_len, dtype=torch.long),
        )
    input_ids = torch.full((len(pieces), seq_len), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for r, p in enumerate(pieces):
        input_ids[r, : len(p)] = torch.tensor(p)
        mask[r, : len(p)] = 1
    labels = input_ids.masked_fill(mask == 0, IGNORE)
    return Rows(input_ids, labels, attention_mask=mask, info={"packed": False, "pad_tokens": int((mask == 0).sum())})


@dataclass
class Prepared:
    rows: Rows
    eval_ids: Any  # 1-D ids of the held-out documents
    info: dict[str, Any]


def prepare(
    text: str,
    tokenizer: Any,
    *,
    seq_len: int,
    eval_tokens: int,
    train_tokens: int,
    documents: str,
    dedup: str,
    near_threshold: float,
    pack_rows: bool,
    seed: int = 0,
) -> Prepared:
    """Held-out ids (the first documents) and training rows (the documents after them), reading
    the text only until `train_tokens` training tokens are there."""
    import torch

    docs = split_documents(text, documents)
    eos = tokenizer.eos_token_id
    seen = Dedup(dedup, near_threshold, seed)
    held: list[int] = []
    train: list[list[int]] = []
    train_count = 0
    i = 0
    chunk = 256
    while i < len(docs) and train_count < train_tokens:
        texts = docs[i : i + chunk]
        i += len(texts)
        for doc_text, ids in zip(texts, tokenizer(texts, add_special_tokens=False)["input_ids"]):
            if seen.is_duplicate(doc_text):
                continue
            if len(held) < eval_tokens:
                held.extend(ids + ([eos] if eos is not None else []))
            elif ids:
                train.append(ids)
                train_count += len(ids) + 1
    if pack_rows:
        check_packing_supported()
        rows = pack(train, seq_len, eos)
    else:
        rows = pad(train, seq_len, eos if eos is not None else 0)
    info = {
        "documents": documents,
        "documents_read": i,
        "documents_trained": len(train),
        "dedup": dedup,
        "duplicates_dropped": dict(seen.dropped),
        "held_out_tokens": len(held),
        "train_tokens": train_count,
        "rows": len(rows),
        **rows.info,
    }
    return Prepared(rows, torch.tensor(held, dtype=torch.long), info)


def batch_rows(step: int, rows: int, batch: int, world: int, rank: int, seed: int) -> tuple[int, list[int]]:
    """(epoch, row indices) of this rank's batch at optimizer step `step` (0-based).

    Each epoch is a seeded permutation of the rows, cut into global batches of batch × world rows;
    rank r takes the r-th slice. Depends only on the step, so a resumed run sees the same batches.
    """
    import torch

    per_step = batch * world
    steps_per_epoch = rows // per_step
    if steps_per_epoch < 1:
        raise ConfigError(
            f"the text gives {rows} training rows, fewer than one step needs ({batch} per rank × {world} ranks); give a"
            " longer text or a smaller {batch_size} / {seq_len}",
            field="batch_size",
        )
    epoch, k = divmod(step, steps_per_epoch)
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    start = k * per_step + rank * batch
    return epoch, order[start : start + batch].tolist()


def steps_per_epoch(rows: int, batch: int, world: int) -> int:
    return rows // (batch * world)
