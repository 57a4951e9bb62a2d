"""The optimizer step every wattlm fine-tuning runs, and the one rule for which zeros it holds.

`wattlm train` (train.loop) and pruning recovery (`compress.recover_`, the `recover<S>` bench step,
`wattlm compress --recover-steps`) both step through `optimizer_step` and `hold_zeros_`; `fit_` is
the plain loop (no metering, one process) that recovery uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SPARSE_MIN_FRACTION = 0.01  # with keep=True: matrices with at least 1 % exact zeros are held


def pruned_by_wattlm(model: Any) -> bool:
    """True when the model's wattlm compression history has a pruning step."""
    history = getattr(model.config, "wattlm_compression", None) or []
    return any((r.get("config") or {}).get("technique") == "prune" for r in history)


def sparse_masks(model: Any, keep: bool | None = None) -> dict[str, Any]:
    """Zero masks of the 2-D weights to hold at zero while training.

    Exact zeros alone do not mean "pruned": a model de-quantized from a GGUF grid has them too (the
    default model's embedding: 1 %). So by default (None) only a model whose wattlm compression
    history has a pruning step is held — every matrix of it with ≥ 1 % zeros; True holds every
    matrix with ≥ 1 % zeros; False holds none."""
    if keep is False or (keep is None and not pruned_by_wattlm(model)):
        return {}
    return {
        n: p == 0
        for n, p in model.named_parameters()
        if p.dim() == 2 and p.is_floating_point() and float((p == 0).float().mean()) >= SPARSE_MIN_FRACTION
    }


def hold_zeros_(params: dict[str, Any], masks: dict[str, Any]) -> None:
    """Set the masked weights of `params` (name → parameter) back to zero after a step."""
    import torch

    with torch.no_grad():
        for name, mask in masks.items():
            params[name].masked_fill_(mask, 0.0)


def optimizer_step(
    loss: Any, params: list[Any], optimizer: Any, *, grad_clip: float = 0.0, scaler: Any = None
) -> float | None:
    """Backward, optional gradient clipping (returns the norm before clipping), step, zero the grads."""
    import torch

    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip)) if grad_clip > 0 else None
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def fit_(
    model: Any,
    batches: Callable[[int], Any],
    *,
    steps: int,
    lr: float,
    masks: dict[str, Any],
    grad_clip: float = 0.0,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train `model` in place for `steps` AdamW steps on `batches(step)` ([b, seq_len] token ids,
    next-token loss), holding `masks` at zero after every step; returns the losses."""
    import torch

    device = next(model.parameters()).device
    named = {name: p for name, p in model.named_parameters() if p.is_floating_point()}
    saved = {name: p.requires_grad for name, p in named.items()}
    optimizer = torch.optim.AdamW(named.values(), lr=lr, weight_decay=0.0)
    losses: list[float] = []
    was_training = model.training
    try:
        for p in named.values():
            p.requires_grad_(True)
        model.train()
        with torch.enable_grad():
            for step in range(steps):
                ids = batches(step).to(device)
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                optimizer_step(loss, list(named.values()), optimizer, grad_clip=grad_clip)
                hold_zeros_(named, masks)
                losses.append(float(loss.detach()))
                if on_step is not None:
                    on_step(step, losses[-1])
    finally:
        for name, p in named.items():
            p.requires_grad_(saved[name])
        model.train(was_training)
    return losses
