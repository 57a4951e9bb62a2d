"""Unstructured and N:M pruning: an importance score per weight, a mask that drops exactly the
asked-for share of the lowest scores, and the handlers of the score-based methods (SparseGPT, which
also updates the weights it keeps, is in sparsegpt.py).

Scores (w: [out, in] weights of one linear layer; x: its calibration inputs, [tokens, in]):
    magnitude, l2shrink   |w|
    taylor                |w · g|           g = ∂L/∂w of the mean calibration loss
    fisher                ½ · w² · F        F = Σ_b (tokens_b / tokens) · g_b², g_b one batch's gradient
    wanda                 |w| · ‖x_j‖₂      per input channel j (Sun et al., "A Simple and Effective
                                            Pruning Approach for Large Language Models", 2023)
A score is compared with the others in its scope: the whole layer, one output row, one group of M
inputs (N:M), or every targeted layer at once (global). Ties are broken by position, so the number of
zeros is exact: round(sparsity · weights in the scope).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from .capture import batches, layerwise
from .config import PruneConfig

BATCH = 8  # calibration sequences per forward pass (forward only)
GRAD_BATCH = 4  # per forward + backward pass: the logits' gradient is [batch, seq, vocab]


def drop_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (same shape as `scores`) of exactly `k` lowest entries, ties taken in order."""
    flat = scores.reshape(-1)
    drop = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k <= 0:
        return drop.view_as(scores)
    if k >= flat.numel():
        return ~drop.view_as(scores)
    kth = flat.float().kthvalue(k).values  # kthvalue is memory-light next to a full argsort
    below = flat < kth
    drop |= below
    ties = (flat == kth).nonzero().squeeze(1)[: k - int(below.sum())]
    drop[ties] = True
    return drop.view_as(scores)


def keep_mask(scores: torch.Tensor, config: PruneConfig) -> torch.Tensor:
    """True where a weight of one layer ([out, in] scores) is kept, for the layer, row or N:M scopes."""
    rows, cols = scores.shape
    if config.m:
        groups = scores.reshape(rows, cols // config.m, config.m)
        # the (M - N) lowest of each group go; stable sort breaks ties by position
        order = groups.float().argsort(dim=2, stable=True)[..., : config.m - config.n]
        drop = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, order, True)
        return ~drop.reshape(rows, cols)
    if config.effective_scope == "row":
        k = round(config.sparsity * cols)
        order = scores.float().argsort(dim=1, stable=True)[:, :k]
        return ~torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, True)
    return ~drop_lowest(scores, round(config.sparsity * scores.numel()))


def check_layer(name: str, linear: nn.Linear, config: PruneConfig) -> None:
    if config.m and linear.in_features % config.m:
        raise InvalidInputError(
            f"{config.name}: {name} has {linear.in_features} inputs, not a multiple of {config.m}; keep it (keep=[...])"
            " or use unstructured pruning"
        )


def apply_mask(
    linear: nn.Linear, keep: torch.Tensor, scores: torch.Tensor, config: PruneConfig, threshold: float | None = None
) -> None:
    """Zero the dropped weights, or for l2shrink scale each by its score / the lowest kept score of
    its scope (`threshold`: that score across the model, for the global scope)."""
    w = linear.weight.data
    if config.method != "l2shrink":
        w.mul_(keep.to(w.dtype))
        return
    inf = torch.tensor(float("inf"), device=scores.device)
    kept = torch.where(keep, scores.float(), inf)
    rows, cols = kept.shape
    if config.m:
        threshold = (
            kept.reshape(rows, cols // config.m, config.m)
            .amin(dim=2, keepdim=True)
            .expand(-1, -1, config.m)
            .reshape(rows, cols)
        )
    elif config.effective_scope == "row":
        threshold = kept.amin(dim=1, keepdim=True)
    elif threshold is None:  # the layer's smallest kept score
        threshold = kept.amin()
    factor = (scores.float() / threshold).clamp(max=1.0)
    w.copy_(torch.where(keep, w, w * factor.to(w.dtype)))


def summary(targets: dict[str, nn.Linear]) -> dict[str, Any]:
    """Zeros in the pruned layers, overall and the least / most sparse layer."""
    per_layer = {name: float((lin.weight == 0).float().mean()) for name, lin in targets.items()}
    zeros = sum(int((lin.weight == 0).sum()) for lin in targets.values())
    weights = sum(lin.weight.numel() for lin in targets.values())
    return {
        "layers_pruned": len(targets),
        "weights_in_pruned_layers": weights,
        "zeros": zeros,
        "sparsity": zeros / weights if weights else 0.0,
        "min_layer_sparsity": min(per_layer.values(), default=0.0),
        "max_layer_sparsity": max(per_layer.values(), default=0.0),
    }


# -- scores ---------------------------------------------------------------------------------------


def gradient_moments(
    model: Any, calibration: torch.Tensor, params: dict[str, nn.Parameter], *, batch_size: int = GRAD_BATCH
) -> tuple[dict, dict]:
    """(g, F) per parameter name: g = gradient of the mean next-token loss over all calibration
    tokens; F = Σ_b (tokens_b / tokens) · g_b² over batches b (an empirical Fisher diagonal).

    Weighting each batch's gradient by its share of the predicted tokens makes g exactly the
    gradient of the loss over the whole set, whatever the batch size.
    """
    if torch.is_inference_mode_enabled():
        raise InvalidInputError(
            "gradient-based pruning (taylor, fisher) cannot run under torch.inference_mode(); call it outside"
        )
    device = next(model.parameters()).device
    wanted = {id(p) for p in params.values()}
    saved = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    total = calibration.shape[0] * (calibration.shape[1] - 1)
    grad = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    try:
        model.eval()  # no dropout: the scores describe the model as it will run
        for _, p in model.named_parameters():
            p.requires_grad_(id(p) in wanted)
        with torch.enable_grad():
            for ids in batches(calibration, batch_size):
                ids = ids.to(device)
                share = ids.shape[0] * (ids.shape[1] - 1) / total
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                grads = torch.autograd.grad(loss, list(params.values()))
                for (name, _), g in zip(params.items(), grads):
                    g = g.float()
                    grad[name].add_(g, alpha=share)
                    fisher[name].add_(g.square(), alpha=share)
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(saved[name])
        model.train(was_training)
    return grad, fisher


def _gradient_scores(
    targets: dict[str, nn.Linear], config: PruneConfig, calibration: Any, model: Any
) -> dict[str, torch.Tensor]:
    params = {name: lin.weight for name, lin in targets.items()}
    grad, fisher = gradient_moments(model, calibration, params)
    if config.method == "taylor":
        return {name: (params[name].detach().float() * grad[name]).abs() for name in params}
    return {name: 0.5 * params[name].detach().float().square() * fisher[name] for name in params}


class ColumnNorms:
    """Σ x_j² over calibration tokens, per input channel j of each hooked layer (Wanda's ‖x_j‖₂²)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, x: torch.Tensor) -> None:
        self.sums[name] = self.sums.get(name, 0) + x.float().square().sum(dim=0)

    def norms(self, name: str) -> torch.Tensor:
        return self.sums.pop(name).sqrt()


def wanda_scores(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖x_j‖₂ for weight [out, in] and input norms [in]."""
    return weight.detach().float().abs() * norms[None, :]


# -- handlers -------------------------------------------------------------------------------------


def _prune_scored(targets: dict[str, nn.Linear], scores: dict[str, torch.Tensor], config: PruneConfig) -> None:
    if config.effective_scope == "global" and not config.m:
        everything = torch.cat([s.reshape(-1).float() for s in scores.values()])
        drop = drop_lowest(everything, round(config.sparsity * everything.numel()))
        kept = everything[~drop]
        threshold = float(kept.min()) if kept.numel() else float("inf")  # l2shrink scales against the model-wide one
        start = 0
        for name, linear in targets.items():
            size = scores[name].numel()
            apply_mask(linear, ~drop[start : start + size].view_as(scores[name]), scores[name], config, threshold)
            start += size
        return
    for name, linear in targets.items():
        apply_mask(linear, keep_mask(scores[name], config), scores[name], config)


@torch.no_grad()
def prune_handler(
    targets: dict[str, nn.Linear], config: PruneConfig, calibration: Any, model: Any
) -> tuple[dict, dict]:
    for name, linear in targets.items():
        check_layer(name, linear, config)
    if config.method == "sparsegpt":
        from .sparsegpt import prune_layers

        prune_layers(targets, config, calibration, model)
    elif config.method == "wanda":

        def process(own: dict[str, nn.Linear], norms: ColumnNorms) -> None:
            _prune_scored(own, {name: wanda_scores(lin.weight, norms.norms(name)) for name, lin in own.items()}, config)

        layerwise(model, targets, calibration, ColumnNorms, process, BATCH)
    elif config.method in ("taylor", "fisher"):
        _prune_scored(targets, _gradient_scores(targets, config, calibration, model), config)
    else:  # magnitude, l2shrink
        _prune_scored(targets, {name: lin.weight.detach().abs() for name, lin in targets.items()}, config)
    details = summary(targets)
    if calibration is not None and config.calibrated:
        details["calibration_tokens"] = int(calibration.numel())
    return {}, details
