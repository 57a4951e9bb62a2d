"""Structured pruning: remove attention heads and MLP channels (width) or whole decoder layers
(depth), leaving a smaller dense model that runs faster on the same kernels and that transformers
reloads from its ordinary config.

Width keeps every layer the same shape (the standard config has one `intermediate_size` and one
`num_attention_heads`), so each layer loses the same number of units, each its own least important
ones. Query heads are removed in equal numbers from every key/value group (grouped-query attention
maps query head h to key/value head h // group), so k_proj and v_proj are untouched. Supports
Llama-style layers (self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj: Llama, Mistral, Qwen2,
SmolLM, ...); depth works for any model whose decoder layers capture.decoder_layers finds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from .capture import decoder_layers, forward_until, input_hooks
from .config import StructuredConfig

BATCH = 8
CHANNEL_MULTIPLE = 8  # MLP widths stay multiples of 8, which vectorized matmul kernels prefer
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def unique_params(model: Any) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _llama_parts(layer: nn.Module) -> tuple[nn.Module, nn.Module]:
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    if (
        attn is None
        or mlp is None
        or any(type(getattr(attn, n, None)) is not nn.Linear for n in ATTN)
        or any(type(getattr(mlp, n, None)) is not nn.Linear for n in MLP)
    ):
        raise InvalidInputError(
            "width pruning needs Llama-style layers (self_attn.q/k/v/o_proj and mlp.gate/up/down_proj as plain"
            f" nn.Linear); {type(layer).__name__} is not one (or is already quantized): use struct<P>-layers, or prune"
            " before quantizing"
        )
    return attn, mlp


# -- importance ------------------------------------------------------------------------------------


def _input_norms(model: Any, modules: dict[str, nn.Module], calibration: torch.Tensor) -> dict[str, torch.Tensor]:
    """‖x_j‖₂ over calibration tokens for each input channel j of each module."""
    from .prune import ColumnNorms

    norms = ColumnNorms()
    with input_hooks(modules, norms, stop_at=model.get_output_embeddings()):
        forward_until(model, calibration, BATCH)
    return {name: norms.norms(name) for name in modules}


def width_importance(
    model: Any, config: StructuredConfig, calibration: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per decoder layer: (query-head scores [heads], MLP-channel scores [intermediate])."""
    layers = decoder_layers(model)
    parts = [_llama_parts(layer) for layer in layers]
    head_dim = parts[0][0].head_dim
    if config.importance == "taylor":
        from .prune import gradient_moments

        params = {}
        for i, (attn, mlp) in enumerate(parts):
            for n in ("q_proj", "o_proj"):
                params[f"{i}.{n}"] = getattr(attn, n).weight
            for n in MLP:
                params[f"{i}.{n}"] = getattr(mlp, n).weight
        grad, _ = gradient_moments(model, calibration, params)
        t = {name: (p.detach().float() * grad[name]).abs() for name, p in params.items()}
        scores = []
        for i in range(len(parts)):
            heads = t[f"{i}.q_proj"].reshape(-1, head_dim, t[f"{i}.q_proj"].shape[1]).sum(dim=(1, 2))
            heads = heads + t[f"{i}.o_proj"].reshape(t[f"{i}.o_proj"].shape[0], -1, head_dim).sum(dim=(0, 2))
            channels = t[f"{i}.gate_proj"].sum(dim=1) + t[f"{i}.up_proj"].sum(dim=1) + t[f"{i}.down_proj"].sum(dim=0)
            scores.append((heads, channels))
        return scores
    # activation: what each unit adds to the residual stream, ‖x_j‖₂ · ‖W_out[:, j]‖₂ summed over
    # its inputs j of o_proj / down_proj
    modules = {f"{i}.o": attn.o_proj for i, (attn, _) in enumerate(parts)} | {
        f"{i}.down": mlp.down_proj for i, (_, mlp) in enumerate(parts)
    }
    norms = _input_norms(model, modules, calibration)
    scores = []
    for i, (attn, mlp) in enumerate(parts):
        per_input = norms[f"{i}.o"] * attn.o_proj.weight.detach().float().norm(dim=0)
        channels = norms[f"{i}.down"] * mlp.down_proj.weight.detach().float().norm(dim=0)
        scores.append((per_input.reshape(-1, head_dim).sum(dim=1), channels))
    return scores


def layer_importance(model: Any, config: StructuredConfig, calibration: torch.Tensor) -> torch.Tensor:
    """One score per decoder layer: 1 − mean cosine(input, output) over tokens (activation), or Σ|w·g|."""
    layers = decoder_layers(model)
    if config.importance == "taylor":
        from .prune import gradient_moments

        params = {f"{i}.{n}": p for i, layer in enumerate(layers) for n, p in layer.named_parameters() if p.dim() == 2}
        grad, _ = gradient_moments(model, calibration, params)
        scores = torch.zeros(len(layers))
        for name, p in params.items():
            scores[int(name.split(".")[0])] += float((p.detach().float() * grad[name]).abs().sum())
        return scores
    sums, counts = torch.zeros(len(layers), dtype=torch.float64), torch.zeros(len(layers), dtype=torch.float64)

    def make(i: int) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(
                x.float().reshape(-1, x.shape[-1]), y.float().reshape(-1, y.shape[-1]), dim=1
            )
            sums[i] += float((1 - cos).sum())
            counts[i] += cos.numel()

        return hook

    handles = [layer.register_forward_hook(make(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with input_hooks({}, None, stop_at=model.get_output_embeddings()):
            forward_until(model, calibration, BATCH)
    finally:
        for handle in handles:
            handle.remove()
    return (sums / counts.clamp(min=1)).float()


# -- surgery ---------------------------------------------------------------------------------------


def _sliced(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = linear.weight.detach()
    w = w[rows] if rows is not None else w
    w = w[:, cols] if cols is not None else w
    bias = linear.bias
    new = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    if bias is not None:
        new.bias.data.copy_(bias.detach()[rows] if rows is not None else bias.detach())
    return new


def plan_width(model: Any, config: StructuredConfig) -> tuple[int, int]:
    """(query heads, MLP channels) to remove from every layer so the model loses ≈ `fraction` of its parameters."""
    layers = decoder_layers(model)
    attn, mlp = _llama_parts(layers[0])
    c = model.config
    heads, kv, head_dim = c.num_attention_heads, c.num_key_value_heads, attn.head_dim
    hidden, inter = attn.q_proj.in_features, mlp.gate_proj.out_features
    target = config.fraction * unique_params(model)
    head_cost = len(layers) * (
        attn.q_proj.in_features * head_dim
        + attn.o_proj.out_features * head_dim
        + (head_dim if attn.q_proj.bias is not None else 0)
    )
    channel_cost = len(layers) * 3 * hidden
    decoder = sum(p.numel() for p in layers.parameters())
    share = target / decoder  # the share of the decoder that must go
    group = heads // kv
    if config.heads >= 0:
        per_group = config.heads // kv if config.heads % kv == 0 else -1
        if per_group < 0:
            raise InvalidInputError(
                f"remove a multiple of {kv} query heads (the same number from each of the {kv} key/value groups), not"
                f" {config.heads}"
            )
        if per_group >= group:
            raise InvalidInputError(
                f"removing {config.heads} of {heads} query heads would leave a key/value group without a query head; at"
                f" most {heads - kv}"
            )
    else:
        per_group = min(group - 1, int(share * group))  # attention is the more sensitive part: round down
    remove_heads = per_group * kv
    rest = max(0.0, target - remove_heads * head_cost)
    channels = int(round(rest / channel_cost / CHANNEL_MULTIPLE)) * CHANNEL_MULTIPLE
    if channels >= inter:
        raise InvalidInputError(
            f"{config.name}: removing {config.fraction:.0%} of the parameters by width would remove every MLP channel; "
            "use a smaller share or struct<P>-layers"
        )
    return remove_heads, channels


def prune_width_(model: Any, config: StructuredConfig, calibration: torch.Tensor) -> dict[str, Any]:
    remove_heads, channels = plan_width(model, config)
    scores = width_importance(model, config, calibration)
    layers = decoder_layers(model)
    c = model.config
    kv, heads = c.num_key_value_heads, c.num_attention_heads
    group = heads // kv
    for layer, (head_scores, channel_scores) in zip(layers, scores):
        attn, mlp = _llama_parts(layer)
        head_dim = attn.head_dim
        if remove_heads:
            per_group = remove_heads // kv
            keep = []
            for g in range(kv):  # the lowest per_group heads of each key/value group go
                members = torch.arange(g * group, (g + 1) * group)
                order = head_scores[members].argsort(stable=True)
                keep.append(members[order[per_group:]].sort().values)
            kept_heads = torch.cat(keep)
            rows = (
                (kept_heads[:, None] * head_dim + torch.arange(head_dim)[None, :])
                .reshape(-1)
                .to(attn.q_proj.weight.device)
            )
            attn.q_proj, attn.o_proj = _sliced(attn.q_proj, rows=rows), _sliced(attn.o_proj, cols=rows)
            attn.num_key_value_groups = group - per_group
        if channels:
            kept = (
                channel_scores.argsort(descending=True, stable=True)[: channel_scores.numel() - channels]
                .sort()
                .values.to(mlp.gate_proj.weight.device)
            )
            mlp.gate_proj, mlp.up_proj = _sliced(mlp.gate_proj, rows=kept), _sliced(mlp.up_proj, rows=kept)
            mlp.down_proj = _sliced(mlp.down_proj, cols=kept)
    first_attn, first_mlp = _llama_parts(layers[0])
    c.head_dim = first_attn.head_dim  # no longer hidden_size / heads once heads are gone
    c.num_attention_heads = heads - remove_heads
    c.intermediate_size = first_mlp.gate_proj.out_features
    return {
        "heads_removed_per_layer": remove_heads,
        "channels_removed_per_layer": channels,
        "num_attention_heads": c.num_attention_heads,
        "intermediate_size": c.intermediate_size,
    }


def drop_layers_(model: Any, removed: list[int]) -> None:
    """Delete the decoder layers at the indices `removed`, keeping config and KV-cache indices consistent."""
    layers = decoder_layers(model)
    kept = [layer for i, layer in enumerate(layers) if i not in removed]
    for index, layer in enumerate(kept):  # the KV cache is indexed by layer_idx
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    for i in sorted(removed, reverse=True):
        del layers[i]
    c = model.config
    if isinstance(getattr(c, "layer_types", None), list):
        c.layer_types = [t for i, t in enumerate(c.layer_types) if i not in removed]
    c.num_hidden_layers = len(kept)


def prune_layers_(model: Any, config: StructuredConfig, calibration: torch.Tensor) -> dict[str, Any]:
    layers = decoder_layers(model)
    per_layer = sum(p.numel() for p in layers[0].parameters())
    count = int(round(config.fraction * unique_params(model) / per_layer))
    if count >= len(layers):
        raise InvalidInputError(f"{config.name} would remove all {len(layers)} decoder layers; use a smaller share")
    if count == 0:
        raise InvalidInputError(
            f"{config.name}: one decoder layer is more than {config.fraction:.0%} of the parameters; use a larger share"
            " or width pruning"
        )
    scores = layer_importance(model, config, calibration)
    removed = sorted(int(i) for i in scores.argsort(stable=True)[:count])
    drop_layers_(model, removed)
    return {
        "layers_removed": removed,
        "num_hidden_layers": model.config.num_hidden_layers,
        "layer_scores": [round(float(s), 6) for s in scores],
    }


@torch.no_grad()
def structured_handler(
    targets: dict[str, nn.Linear], config: StructuredConfig, calibration: Any, model: Any
) -> tuple[dict, dict]:
    before = unique_params(model)
    details = (
        prune_layers_(model, config, calibration)
        if config.unit == "layers"
        else prune_width_(model, config, calibration)
    )
    after = unique_params(model)
    details.update(
        {
            "params_before": before,
            "params_after": after,
            "fraction_removed": 1 - after / before,
            "calibration_tokens": int(calibration.numel()),
        }
    )
    return {}, details
