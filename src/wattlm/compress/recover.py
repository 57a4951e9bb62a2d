"""Short recovery fine-tuning after pruning, with the pruned weights held at zero.

`recover_(model, calibration, steps=100)` trains every floating-point parameter with AdamW on
the calibration windows (next-token loss) and, after each step, sets the weights that were zero
when it started back to zero — so the sparsity pattern, and any N:M layout, survives. A structurally
pruned model has no zeros to hold and is simply fine-tuned. `on_step(step, loss)` is the hook the
training module builds on (energy per step, logging, early stop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError


def zero_masks(model: Any) -> dict[str, Any]:
    """Boolean masks of the exact zeros of every 2-D floating-point parameter that has any."""
    return {name: p == 0 for name, p in model.named_parameters() if p.dim() == 2 and p.is_floating_point() and bool((p == 0).any())}


def recover_(
    model: Any,
    calibration: Any,
    *,
    steps: int,
    lr: float = 2e-5,
    batch_size: int = 4,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune `model` in place for `steps` AdamW steps on `calibration` ([samples, seq_len] ids).

    Returns the first and last training losses, the steps run and the number of weights held at zero.
    """
    import torch

    if steps < 1:
        raise InvalidInputError(f"recovery needs at least one step, got {steps}")
    if not lr > 0:
        raise InvalidInputError(f"recovery learning rate must be positive, got {lr}")
    if torch.is_inference_mode_enabled():
        raise InvalidInputError("recovery fine-tuning cannot run under torch.inference_mode(); call it outside")
    device = next(model.parameters()).device
    masks = zero_masks(model)
    params = {name: p for name, p in model.named_parameters() if p.is_floating_point()}
    saved = {name: p.requires_grad for name, p in params.items()}
    optimizer = torch.optim.AdamW(params.values(), lr=lr, weight_decay=0.0)
    losses: list[float] = []
    was_training = model.training
    try:
        for p in params.values():
            p.requires_grad_(True)
        model.train()
        order = torch.randperm(calibration.shape[0], generator=torch.Generator().manual_seed(0))
        with torch.enable_grad():
            for step in range(steps):
                start = (step * batch_size) % calibration.shape[0]
                ids = calibration[order[start : start + batch_size]].to(device)
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for name, mask in masks.items():
                        params[name].masked_fill_(mask, 0.0)
                losses.append(float(loss.detach()))
                if on_step is not None:
                    on_step(step, losses[-1])
    finally:
        for name, p in params.items():
            p.requires_grad_(saved[name])
        model.train(was_training)
    return {"steps": steps, "lr": lr, "batch_size": batch_size, "first_loss": losses[0], "last_loss": losses[-1], "held_zeros": sum(int(m.sum()) for m in masks.values())}


def record_recovery(model: Any, result: dict[str, Any]) -> None:
    """Note the fine-tuning in the model's compression history (saved with it, shown in bench results)."""
    history = list(getattr(model.config, "wattlm_compression", None) or [])
    model.config.wattlm_compression = history + [{"name": f"recover{result['steps']}", "kernel": None, "details": result, "modules": {}}]
