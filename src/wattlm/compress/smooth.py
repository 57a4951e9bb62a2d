"""SmoothQuant (Xiao et al. 2023): divide activation channel j by s_j and multiply the weights'
input column j by s_j — the product XWᵀ is unchanged, but activation outliers shrink, so per-token
int8 activations lose less. s_j = max|X_j|^α / max_rows|W_j|^(1-α).

Where the division goes (so no extra op runs at inference), per decoder layer:
    q/k/v_proj inputs     ← input_layernorm.weight (and bias) / s
    gate/up_proj inputs   ← post_attention_layernorm.weight (and bias) / s
    down_proj inputs      ← up_proj output rows / s     (down's input is act(gate) · up)
o_proj is left alone: its input channels are value heads shared across query heads (GQA).
Calibrated α: for each group, the α in the grid with the smallest squared error between the
fake-quantized product and the float product on calibration tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from .capture import decoder_layers, forward_until, input_hooks
from .config import W8A8Config
from .qlinear import int8_rows

ROWS_KEPT = 1024  # calibration tokens per group kept for the α search (a seeded sample)
NORMS = ("RMSNorm", "LayerNorm")  # norms computing weight · normalized(x) (+ bias); Gemma's (1 + weight) is not


def _fake_w8a8(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ wᵀ with both rounded as W8A8Linear rounds them (per token, per output channel)."""
    (xq, xs), (wq, ws) = int8_rows(x), int8_rows(w)
    return (xq.float() * xs[:, None]) @ (wq.float() * ws[:, None]).t()


def _groups(model: Any, targets: dict[str, nn.Linear]) -> list[tuple[str, nn.Module, list[str], str]]:
    """(kind, where the division goes, linear names, name whose input is hooked) per smoothable group."""
    found = []
    names = {id(m): n for n, m in model.named_modules()}
    for layer in decoder_layers(model):
        base = names[id(layer)]
        sub = dict(layer.named_modules())
        plans = [
            ("norm", "input_layernorm", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
            ("norm", "post_attention_layernorm", ["mlp.gate_proj", "mlp.up_proj"]),
            ("rows", "mlp.up_proj", ["mlp.down_proj"]),
        ]
        for kind, source, linears in plans:
            full = [f"{base}.{n}" for n in linears if n in sub]
            if source not in sub or not full or any(n not in targets for n in full):
                continue  # missing or kept in high precision: leave this group as it is
            if kind == "norm" and not type(sub[source]).__name__.endswith(NORMS):
                raise InvalidInputError(
                    f"w8a8-smooth cannot fold scales into {type(sub[source]).__name__} ({base}.{source}); use w8a8 for"
                    " this model"
                )
            found.append((kind, sub[source], full, full[0]))
    if not found:
        raise InvalidInputError(
            "w8a8-smooth found no Llama-style layer (input_layernorm → q/k/v_proj, ...) to smooth; use w8a8"
        )
    return found


@torch.no_grad()
def smooth_(
    model: Any, targets: dict[str, nn.Linear], config: W8A8Config, calibration: torch.Tensor
) -> dict[str, float]:
    """Fold SmoothQuant scales into the model in place; returns the α chosen per group."""
    groups = _groups(model, targets)
    hooked = {probe: targets[probe] for _, _, _, probe in groups}
    absmax: dict[str, torch.Tensor] = {}
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in hooked}
    generator = torch.Generator().manual_seed(0)

    def record(name: str, x: torch.Tensor) -> None:
        x = x.float()
        amax = x.abs().amax(dim=0)
        absmax[name] = torch.maximum(absmax[name], amax) if name in absmax else amax
        pick = torch.randperm(x.shape[0], generator=generator)[: ROWS_KEPT // 4]
        rows[name].append(x[pick.to(x.device)])

    with input_hooks(hooked, record, stop_at=model.get_output_embeddings()):
        forward_until(model, calibration, 8)

    chosen = {}
    for kind, source, linears, probe in groups:
        x = torch.cat(rows[probe])[:ROWS_KEPT]
        weights = [targets[n].weight.float() for n in linears]
        w_max = torch.stack([w.abs().amax(dim=0) for w in weights]).amax(dim=0).clamp(min=1e-5)
        x_max = absmax[probe].clamp(min=1e-5)
        exact = [x @ w.t() for w in weights]

        def error(
            alpha: float, x: Any = x, x_max: Any = x_max, w_max: Any = w_max, pairs: Any = (weights, exact)
        ) -> float:
            s = (x_max**alpha / w_max ** (1 - alpha)).clamp(min=1e-5)
            return sum(float(((_fake_w8a8(x / s, w * s) - y) ** 2).sum()) for w, y in zip(*pairs))

        alpha = config.alpha if config.alpha is not None else min(config.alpha_grid, key=error)
        s = (x_max**alpha / w_max ** (1 - alpha)).clamp(min=1e-5)
        if kind == "norm":
            source.weight.div_(s.to(source.weight.dtype))
            if getattr(source, "bias", None) is not None:
                source.bias.div_(s.to(source.bias.dtype))
        else:  # scale the rows of the previous linear's output
            source.weight.div_(s[:, None].to(source.weight.dtype))
            if source.bias is not None:
                source.bias.div_(s.to(source.bias.dtype))
        for name in linears:
            targets[name].weight.mul_(s[None, :].to(targets[name].weight.dtype))
        chosen[probe] = alpha  # keyed by the group's first linear
    return chosen
