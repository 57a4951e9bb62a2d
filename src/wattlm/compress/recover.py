"""Short recovery fine-tuning after pruning, with the pruned weights held at zero.

`recover_(model, calibration, steps=100)` trains every floating-point parameter with AdamW on
the calibration windows (next-token loss) through the same optimizer step as `wattlm train`
(wattlm.finetune) and, after each step, sets the weights that pruning zeroed back to zero — so the
sparsity pattern, and any N:M layout, survives. A structurally pruned model has no zeros to hold and
is simply fine-tuned. `on_step(step, loss)` is called after every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError


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

    The steps are those of `wattlm train` (wattlm.finetune), with its rule for the zeros to hold:
    those of a model whose wattlm history has a pruning step. Returns the first and last training
    losses, the steps run and the number of weights held at zero.
    """
    import torch

    from ..finetune import fit_, sparse_masks

    if steps < 1:
        raise InvalidInputError(f"recovery needs at least one step, got {steps}")
    if not lr > 0:
        raise InvalidInputError(f"recovery learning rate must be positive, got {lr}")
    if torch.is_inference_mode_enabled():
        raise InvalidInputError("recovery fine-tuning cannot run under torch.inference_mode(); call it outside")
    masks = sparse_masks(model)
    order = torch.randperm(calibration.shape[0], generator=torch.Generator().manual_seed(0))

    def batch(step: int) -> Any:
        start = (step * batch_size) % calibration.shape[0]
        return calibration[order[start : start + batch_size]]

    losses = fit_(model, batch, steps=steps, lr=lr, masks=masks, on_step=on_step)
    held = sum(int(m.sum()) for m in masks.values())
    return {
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "held_zeros": held,
    }


def record_recovery(model: Any, result: dict[str, Any]) -> None:
    """Note the fine-tuning in the model's compression history (saved with it, shown in bench results)."""
    history = list(getattr(model.config, "wattlm_compression", None) or [])
    model.config.wattlm_compression = history + [
        {"name": f"recover{result['steps']}", "kernel": None, "details": result, "modules": {}}
    ]
