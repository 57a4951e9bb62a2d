"""A transformer's shape, from a Hugging Face `config.json`: parameters, the bytes one decode step
reads, the key/value cache per token and the FLOPs per token.

    attention, per layer   d·h·hd (q) + 2·d·kv·hd (k, v) + h·hd·d (o)     h heads, kv key/value heads, hd head dim
    MLP, per layer         3·d·ff (gated: gate, up, down; 2·d·ff without a gate)
    MoE MLP, per layer     E experts of 3·d·ff_e + a router d·E (+ shared experts); k of E read per token
    embeddings             V·d, and the output head V·d again unless tied
    KV cache per token     2 · layers · kv · hd · bytes                      (grouped-query attention: kv < h)
    FLOPs per token        2 · active parameters (the input embedding is a lookup) + 4 · layers · h · hd · context
The norms' weights are counted (2·d per layer and one final); biases are left out (a few per mille).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# The keys different model families use for the same quantity, first found wins.
_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts")
_EXPERT_FF = ("moe_intermediate_size", "expert_intermediate_size")
_UNGATED = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "gelu_fast")  # GPT-2 / OPT / Falcon style MLPs


@dataclass(frozen=True)
class Architecture:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    gated_mlp: bool = True
    experts: int = 0  # 0: a dense model
    experts_per_token: int = 0
    expert_intermediate: int = 0
    shared_intermediate: int = 0  # shared experts' total width, read by every token
    name: str = ""

    def __post_init__(self) -> None:
        for key in ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab"):
            if getattr(self, key) <= 0:
                raise ConfigError(
                    f"{{model_config}} {self.name}: {key} must be positive, got {getattr(self, key)}",
                    field="model_config",
                )
        if self.heads % self.kv_heads:
            raise ConfigError(
                f"{{model_config}} {self.name}: {self.heads} attention heads cannot share {self.kv_heads} key/value"
                " heads evenly",
                field="model_config",
            )
        if self.experts:
            if not 0 < self.experts_per_token <= self.experts:
                raise ConfigError(
                    f"{{model_config}} {self.name}: {self.experts_per_token} experts per token out of"
                    f" {self.experts}; it must lie in 1..{self.experts}",
                    field="model_config",
                )
            if self.expert_intermediate <= 0:
                raise ConfigError(
                    f"{{model_config}} {self.name}: a mixture of experts needs the experts' width"
                    " (moe_intermediate_size, or intermediate_size)",
                    field="model_config",
                )

    # -- parameters ------------------------------------------------------------------------------

    @property
    def attention_params(self) -> int:
        d, hd = self.hidden, self.head_dim
        return d * self.heads * hd * 2 + d * self.kv_heads * hd * 2

    @property
    def _mlp_width_factor(self) -> int:
        return 3 if self.gated_mlp else 2

    @property
    def expert_params(self) -> int:
        """One expert's weights (one layer)."""
        return self._mlp_width_factor * self.hidden * self.expert_intermediate

    @property
    def _dense_mlp_params(self) -> int:
        """Per layer: the MLP every token reads (the whole MLP of a dense model; a MoE's router and shared
        experts)."""
        if not self.experts:
            return self._mlp_width_factor * self.hidden * self.intermediate
        return self.hidden * self.experts + self._mlp_width_factor * self.hidden * self.shared_intermediate

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    @property
    def _layer_fixed(self) -> int:
        return self.attention_params + self._dense_mlp_params + 2 * self.hidden

    @property
    def params_total(self) -> int:
        per_layer = self._layer_fixed + self.experts * self.expert_params
        return self.layers * per_layer + self.embedding_params + self.head_params + self.hidden

    @property
    def params_active(self) -> int:
        """Parameters one token is multiplied with (the input embedding is a lookup, not counted)."""
        experts = self.experts_per_token * self.expert_params if self.experts else 0
        return self.layers * (self._layer_fixed + experts) + self.vocab * self.hidden + self.hidden

    def params_read(self, batch: int) -> float:
        """Parameters one decode step over `batch` sequences reads from memory: every dense weight and,
        in a MoE, the experts the batch's tokens pick — E·(1 − (1 − k/E)^B) distinct experts per layer
        when choices are uniform and independent. The input embedding: one row per token, left out."""
        base = self.layers * self._layer_fixed + self.vocab * self.hidden + self.hidden
        if not self.experts:
            return float(base)
        touched = self.experts * (1.0 - (1.0 - self.experts_per_token / self.experts) ** max(1, batch))
        return base + self.layers * touched * self.expert_params

    # -- cache and FLOPs -------------------------------------------------------------------------

    def kv_bytes_per_token(self, bytes_per_value: float) -> float:
        return 2.0 * self.layers * self.kv_heads * self.head_dim * bytes_per_value

    def flops_per_token(self, context: float) -> float:
        """Forward FLOPs of one token that attends to `context` earlier tokens."""
        return 2.0 * self.params_active + 4.0 * self.layers * self.heads * self.head_dim * context

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "params_total": self.params_total, "params_active": self.params_active}


def _number(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def load_config(path: str | Path) -> Architecture:
    """The architecture in a Hugging Face `config.json` (a file, or a model folder holding one)."""
    p = Path(path)
    file = p / "config.json" if p.is_dir() else p
    if not file.is_file():
        raise ConfigError(
            f"{{model_config}} {path}: no such file (give a config.json, or a model folder that holds one)",
            field="model_config",
        )
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"{{model_config}} {file}: not a JSON config ({e}); give a Hugging Face config.json",
            field="model_config",
        ) from e
    if not isinstance(config, dict):
        raise ConfigError(f"{{model_config}} {file}: not a JSON object", field="model_config")
    return from_config(config, name=str(config.get("_name_or_path") or file.parent.name or file.name))


def from_config(config: dict[str, Any], name: str = "") -> Architecture:
    text = config.get("text_config")
    if isinstance(text, dict):  # multimodal configs keep the language model's shape apart
        config = {**config, **text}
    needed = {
        "layers": ("num_hidden_layers", "n_layer", "num_layers"),
        "hidden": ("hidden_size", "n_embd", "d_model"),
        "heads": ("num_attention_heads", "n_head"),
        "vocab": ("vocab_size",),
    }
    values = {key: _number(config, *names) for key, names in needed.items()}
    missing = [names[0] for key, names in needed.items() if values[key] is None]
    if missing:
        raise ConfigError(
            f"{{model_config}} {name}: lacks {', '.join(missing)}; a decoder config needs the layer count, hidden"
            " size, attention heads and vocabulary",
            field="model_config",
        )
    layers, hidden, heads, vocab = (int(values[k]) for k in ("layers", "hidden", "heads", "vocab"))
    experts = int(_number(config, *_EXPERTS, default=0) or 0)
    intermediate = _number(config, "intermediate_size", "ffn_dim", "n_inner", default=None)
    expert_ff = int(_number(config, *_EXPERT_FF, default=intermediate if experts else 0) or 0)
    if intermediate is None:
        intermediate = expert_ff if experts else 4 * hidden
    shared = int(config.get("shared_expert_intermediate_size") or 0)
    if not shared and config.get("n_shared_experts"):
        shared = int(config["n_shared_experts"]) * expert_ff
    act = str(config.get("hidden_act") or config.get("activation_function") or "silu")
    return Architecture(
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=int(_number(config, "num_key_value_heads", "num_kv_heads", default=heads)),
        head_dim=int(_number(config, "head_dim", default=hidden // heads)),
        intermediate=int(intermediate),
        vocab=vocab,
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        gated_mlp=act not in _UNGATED,
        experts=experts,
        experts_per_token=int(_number(config, "num_experts_per_tok", "moe_topk", default=0) or 0),
        expert_intermediate=expert_ff,
        shared_intermediate=shared,
        name=name,
    )


@dataclass(frozen=True)
class ParamsOnly:
    """A dense model known only by its parameter count: every weight read each step, 2·N FLOPs a token;
    the cache as multi-head attention (2 · layers · d_model values a token) when layers and d_model are
    given, else left out."""

    params: float
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None

    @property
    def params_total(self) -> float:
        return self.params

    @property
    def params_active(self) -> float:
        return self.params

    def params_read(self, batch: int) -> float:
        return self.params

    def kv_bytes_per_token(self, bytes_per_value: float) -> float:
        return 2.0 * self.layers * self.hidden * bytes_per_value if self.layers and self.hidden else 0.0

    def flops_per_token(self, context: float) -> float:
        attention = 4.0 * self.layers * self.hidden * context if self.layers and self.hidden else 0.0
        return 2.0 * self.params + attention

    def to_dict(self) -> dict[str, Any]:
        return {"params_total": self.params, "params_active": self.params, "layers": self.layers, "hidden": self.hidden}


Shape = Architecture | ParamsOnly
