"""Scoring a model on the protocol's windows: perplexity, and agreement with a reference.

`score(model, windows)` is the one scoring function of wattlm (bench, train and compress call it):
batched forwards, the negative log-likelihood summed in float64, and optionally KL and top-1
agreement against a reference's next-token distributions.

KL divergence KL(P_base ‖ Q_variant) of the next-token distributions, averaged over predicted
tokens, needs the baseline's full distribution at every position: seq_len × vocab floats per
window (100 MB for 512 × 49152 in float32). Holding that for every window in memory would
crowd the measurement of the variants, so the baseline's log-probabilities are written to a
temporary file during the baseline's pass and read back one window at a time; `kl_windows`
caps how many windows take part (the first ones), and results record the number.

Sums (not means) are returned so that shards scored by different ranks add up exactly.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_KL_CHUNK = 64  # positions per step of the KL sum


@dataclass
class QualitySums:
    nll_sum: float = 0.0  # nats, summed in float64
    predicted: int = 0
    windows: int = 0
    kl_sum: float = 0.0
    top1_agree: int = 0
    kl_predicted: int = 0
    kl_windows: int = 0

    def __add__(self, other: QualitySums) -> QualitySums:
        return QualitySums(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple:
        return (
            self.nll_sum,
            self.predicted,
            self.windows,
            self.kl_sum,
            self.top1_agree,
            self.kl_predicted,
            self.kl_windows,
        )

    def result(self) -> Quality:
        nll = self.nll_sum / self.predicted
        has_kl = self.kl_predicted > 0
        return Quality(
            ppl=ppl_from_nll(nll),
            nll=nll,
            predicted_tokens=self.predicted,
            windows=self.windows,
            kl=self.kl_sum / self.kl_predicted if has_kl else None,
            top1_agreement=self.top1_agree / self.kl_predicted if has_kl else None,
            kl_tokens=self.kl_predicted,
            kl_windows=self.kl_windows,
        )


def ppl_from_nll(nll: float) -> float:
    """exp(mean NLL), or inf where that is beyond float range (a broken model: math.exp would raise)."""
    if math.isnan(nll):
        return math.nan
    return math.exp(nll) if nll < _MAX_EXP else math.inf


_MAX_EXP = math.log(1.7976931348623157e308)


@dataclass(frozen=True)
class Quality:
    """Perplexity of a model on a protocol's windows (and, with a reference, its KL to it)."""

    ppl: float
    nll: float  # mean negative log-likelihood per predicted token, nats
    predicted_tokens: int
    windows: int
    kl: float | None  # mean KL(baseline ‖ variant) per predicted token, nats; None for the baseline
    top1_agreement: float | None  # share of positions where both pick the same most likely token
    kl_tokens: int
    kl_windows: int

    @property
    def finite(self) -> bool:
        """False for a broken model: its likelihood (or perplexity) is NaN or infinite."""
        return math.isfinite(self.nll) and math.isfinite(self.ppl)


class Reference:
    """The baseline's next-token log-probabilities on the first windows, in a temporary file."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="wattlm-ref-", dir=folder)
        self.path = Path(self._dir.name) / "logprobs.f32"
        self.shape: tuple[int, int] | None = None  # (positions per window, vocab)
        self.windows = 0

    def append(self, logprobs: Any) -> None:
        """Add one window's [seq_len-1, vocab] float32 log-probabilities."""
        array = logprobs.detach().float().cpu().contiguous().numpy()
        if self.shape is None:
            self.shape = tuple(array.shape)
        with open(self.path, "ab") as f:
            array.tofile(f)
        self.windows += 1

    def window(self, index: int) -> Any:
        import numpy as np
        import torch

        assert self.shape is not None and index < self.windows  # internal: callers check kl_windows
        count = self.shape[0] * self.shape[1]
        data = np.fromfile(self.path, dtype=np.float32, count=count, offset=index * count * 4)
        return torch.from_numpy(data).view(self.shape)

    def close(self) -> None:
        self._dir.cleanup()


def score(
    model: Any,
    windows: Any,
    *,
    batch_size: int = 1,
    reference: Reference | None = None,
    write_reference: bool = False,
    kl_windows: int = 0,
    indices: Any = None,
) -> QualitySums:
    """Score `windows` ([n, seq_len] token ids), `batch_size` windows per forward pass.

    `score(model, windows).result()` is the perplexity. With `write_reference`, the
    log-probabilities of the windows whose protocol index is below `kl_windows` are stored in
    `reference` (the baseline's pass). With a filled `reference`, KL and top-1 agreement to it are
    computed on those same windows (a variant's pass). `indices` gives each row's index in the
    whole protocol when `windows` is one rank's shard (default 0..n-1).
    """
    import torch
    import torch.nn.functional as F

    sums = QualitySums()
    # An engine model (engines.llamacpp) gives a window's logits itself, from the same token ids.
    window_logits = getattr(model, "window_logits", None)
    device = torch.device("cpu") if window_logits is not None else next(model.parameters()).device
    indices = list(range(windows.shape[0])) if indices is None else [int(i) for i in indices]
    stored = 0  # windows of this shard already in (or read from) the reference
    with torch.inference_mode():
        for start in range(0, len(indices), max(1, batch_size)):
            batch = windows[start : start + max(1, batch_size)].to(device)  # [b, seq_len]
            if window_logits is not None:
                logits_batch = [window_logits(row) for row in batch]
            else:
                logits_batch = model(batch).logits  # [b, seq_len, vocab]
            for row, index in enumerate(indices[start : start + batch.shape[0]]):
                logits = logits_batch[row][:-1].float()  # [seq_len-1, vocab]: predictions of tokens 1..
                logprobs = F.log_softmax(logits, dim=-1)
                targets = batch[row, 1:]
                # A float32 sum over many tokens drifts: summed in float64.
                sums.nll_sum -= float(logprobs.gather(1, targets[:, None]).double().sum())
                sums.predicted += targets.numel()
                sums.windows += 1
                if reference is None or index >= kl_windows:
                    continue
                if write_reference:
                    reference.append(logprobs)
                    continue
                base = reference.window(stored)  # [seq_len-1, vocab] float32, on the CPU
                stored += 1
                # KL(P‖Q) = Σ_v p_v (log p_v − log q_v) per position. In float64: for near-identical
                # variants the terms cancel to ~1e-7, where float32 rounding would make it negative.
                # A few positions at a time, so the float64 temporaries stay small beside the model.
                for at in range(0, base.shape[0], _KL_CHUNK):
                    p = base[at : at + _KL_CHUNK].to(device).double()
                    q = logprobs[at : at + _KL_CHUNK].double()
                    sums.kl_sum += float((p.exp() * (p - q)).sum())
                    sums.top1_agree += int((p.argmax(-1) == q.argmax(-1)).sum())
                sums.kl_predicted += targets.numel()
                sums.kl_windows += 1
    return sums
