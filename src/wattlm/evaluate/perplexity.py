"""The evaluation protocol: non-overlapping windows of the same token ids for every variant.

Windows: the first `max_tokens` tokens of the text, cut into `n = max_tokens // seq_len` windows of
`seq_len` tokens (a shorter tail is dropped). Each window is scored on its own (no context carried
over), predicting tokens 2..seq_len from the ones before: the mean negative log-likelihood is over
n·(seq_len − 1) predictions, and perplexity = exp(mean NLL). Scoring itself is
`wattlm.evaluate.quality.score`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Protocol:
    seq_len: int = 512
    max_tokens: int = 16_384

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ConfigError(
                f"{{seq_len}} must be at least 2 tokens, got {self.seq_len}", field="seq_len", value=self.seq_len
            )
        if self.max_tokens < self.seq_len:
            raise ConfigError(
                f"{{max_tokens}} ({self.max_tokens}) must be at least {{seq_len}} ({self.seq_len})",
                field="max_tokens",
                value=self.max_tokens,
            )


def make_windows(token_ids: Any, protocol: Protocol, context_len: int | None = None) -> Any:
    """Cut token ids (1-D) into a [windows, seq_len] LongTensor following the protocol."""
    import torch

    if context_len is not None and protocol.seq_len > context_len:
        raise ConfigError(
            f"{{seq_len}} {protocol.seq_len} is larger than the model's context of {context_len} tokens",
            field="seq_len",
            value=protocol.seq_len,
        )
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()[: protocol.max_tokens]
    n = ids.numel() // protocol.seq_len
    if n == 0:
        raise ConfigError(
            f"the text has {ids.numel()} tokens, fewer than one window of {protocol.seq_len}: give a longer text or a"
            " smaller {seq_len}",
            field="seq_len",
            value=protocol.seq_len,
        )
    return ids[: n * protocol.seq_len].view(n, protocol.seq_len)
