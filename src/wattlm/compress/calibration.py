"""Calibration samples: seeded, non-overlapping windows of token ids drawn from a pool of tokens.

GPTQ and SmoothQuant fit their choices to these activations, so the pool must not be the text the
model is evaluated on: bench draws it from the text after the evaluated tokens, or from a separate
file (e.g. WikiText-2 valid when evaluating on test).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

POOL_FACTOR = 4  # draw the samples from 4× as many tokens as they need, so they are a random subset


def sample_windows(pool: Any, samples: int, seq_len: int, seed: int = 0) -> Any:
    """[min(samples, available), seq_len] windows of `pool` (1-D ids), chosen by a seeded permutation."""
    import torch

    available = pool.numel() // seq_len
    if available < 1:
        raise ConfigError(
            f"calibration needs at least {seq_len} tokens of text not used for evaluation, found {pool.numel()}; give a"
            " longer text or {calib_text} FILE",
            field="calib_text",
        )
    tiles = pool[: available * seq_len].reshape(available, seq_len)
    order = torch.randperm(available, generator=torch.Generator().manual_seed(seed))[:samples]
    return tiles[order.sort().values]


def calibration_ids(
    tokenizer: Any, corpus: Any, samples: int, seq_len: int, *, skip_tokens: int = 0, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """Windows drawn from `corpus.text` after its first `skip_tokens` tokens (those that are
    evaluated); returns the ids [n, seq_len] and a description for results."""
    from ..models.corpus import tokenize_prefix

    pool = tokenize_prefix(tokenizer, corpus.text, skip_tokens + POOL_FACTOR * samples * seq_len)[skip_tokens:]
    ids = sample_windows(pool, samples, seq_len, seed=seed)
    info = {
        "text": corpus.name,
        "sha256": corpus.sha256,
        "tokens_skipped": skip_tokens,
        "samples": int(ids.shape[0]),
        "seq_len": seq_len,
        "seed": seed,
    }
    return ids, info
