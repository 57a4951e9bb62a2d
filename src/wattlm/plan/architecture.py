"""A transformer's shape, from a Hugging Face `config.json`: parameters, the bytes one decode step
reads, the key/value cache per token and the FLOPs per token.

    attention, per layer   d·h·hd (q) + 2·d·kv·hd (k, v) + h·hd·d (o)     h heads, kv key/value heads, hd head dim
    MLP, per layer         3·d·ff (gated: gate, up, down; 2·d·ff without a gate)
    MoE MLP, per layer     E experts of 3·d·ff_e + a router d·E (+ shared experts); k of E read per token
                           (DeepSeek: the first `first_k_dense_replace` layers keep a dense MLP)
    embeddings             V·d, and the output head V·d again unless tied
    KV cache per token     2 · layers · kv · hd · bytes                      (grouped-query attention: kv < h)
                           layers · (kv_lora_rank + qk_rope_head_dim) · bytes  (latent attention, DeepSeek-V2/V3)
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
class Latent:
    """Multi-head latent attention (DeepSeek-V2/V3): keys and values cached as one compressed vector."""

    kv_rank: int  # kv_lora_rank: the cached latent
    rope_dim: int  # qk_rope_head_dim: the positional part, cached beside it
    nope_dim: int  # qk_nope_head_dim
    v_dim: int  # v_head_dim
    q_rank: int = 0  # q_lora_rank (0: queries projected directly)


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
    dense_layers: int = 0  # a MoE's first layers with a dense MLP of `intermediate` (first_k_dense_replace)
    latent: Latent | None = None
    name: str = ""
    assumed: tuple[str, ...] = ()  # what the config left out and was assumed

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
        if not 0 <= self.dense_layers <= self.layers:
            raise ConfigError(
                f"{{model_config}} {self.name}: {self.dense_layers} dense layers out of {self.layers}",
                field="model_config",
            )

    # -- parameters ------------------------------------------------------------------------------

    @property
    def attention_params(self) -> int:
        d, h = self.hidden, self.heads
        if self.latent is not None:
            m = self.latent
            q_dim = h * (m.nope_dim + m.rope_dim)
            q = d * m.q_rank + m.q_rank * q_dim if m.q_rank else d * q_dim
            kv = d * (m.kv_rank + m.rope_dim) + m.kv_rank * h * (m.nope_dim + m.v_dim)
            return q + kv + h * m.v_dim * d
        hd = self.head_dim
        return d * h * hd * 2 + d * self.kv_heads * hd * 2

    @property
    def _mlp_width_factor(self) -> int:
        return 3 if self.gated_mlp else 2

    @property
    def expert_params(self) -> int:
        """One expert's weights (one layer)."""
        return self._mlp_width_factor * self.hidden * self.expert_intermediate

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.experts else 0

    @property
    def _always_read(self) -> int:
        """Weights every token reads: attention and norms of every layer, the dense MLPs, and in MoE
        layers the router and the shared experts; plus the output head (or the tied embedding) and the
        final norm."""
        f = self._mlp_width_factor * self.hidden
        dense_mlp = (self.layers - self.moe_layers) * f * self.intermediate
        moe_fixed = self.moe_layers * (self.hidden * self.experts + f * self.shared_intermediate)
        layers = self.layers * (self.attention_params + 2 * self.hidden) + dense_mlp + moe_fixed
        return layers + self.vocab * self.hidden + self.hidden

    @property
    def params_total(self) -> int:
        embedding = 0 if self.tied_embeddings else self.vocab * self.hidden  # the input table, apart from the head
        return self._always_read + embedding + self.moe_layers * self.experts * self.expert_params

    @property
    def params_active(self) -> int:
        """Parameters one token is multiplied with (the input embedding is a lookup, not counted)."""
        return self._always_read + self.moe_layers * self.experts_per_token * self.expert_params

    def params_read(self, batch: int) -> float:
        """Parameters one decode step over `batch` sequences reads from memory: every dense weight and,
        in a MoE, the experts the batch's tokens pick — E·(1 − (1 − k/E)^B) distinct experts per layer
        when choices are uniform and independent. The input embedding: one row per token, left out."""
        if not self.experts:
            return float(self._always_read)
        touched = self.experts * (1.0 - (1.0 - self.experts_per_token / self.experts) ** max(1, batch))
        return self._always_read + self.moe_layers * touched * self.expert_params

    # -- cache and FLOPs -------------------------------------------------------------------------

    def kv_bytes_per_token(self, bytes_per_value: float) -> float:
        if self.latent is not None:  # the latent and the positional key, shared by all heads
            return self.layers * (self.latent.kv_rank + self.latent.rope_dim) * bytes_per_value
        return 2.0 * self.layers * self.kv_heads * self.head_dim * bytes_per_value

    def flops_per_token(self, context: float) -> float:
        """Forward FLOPs of one token that attends to `context` earlier tokens: 2 per active parameter,
        plus per head QKᵀ and AV over the context (with latent attention, over the latent, weights absorbed)."""
        if self.latent is not None:
            per_head = 2 * self.latent.kv_rank + self.latent.rope_dim
        else:
            per_head = 2 * self.head_dim
        return 2.0 * self.params_active + 2.0 * self.layers * self.heads * per_head * context

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
    latent = None
    if config.get("kv_lora_rank"):
        latent = Latent(
            kv_rank=int(config["kv_lora_rank"]),
            rope_dim=int(config.get("qk_rope_head_dim") or 0),
            nope_dim=int(config.get("qk_nope_head_dim") or 0),
            v_dim=int(config.get("v_head_dim") or 0),
            q_rank=int(config.get("q_lora_rank") or 0),
        )
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
        dense_layers=int(config.get("first_k_dense_replace") or 0) if experts else 0,
        latent=latent,
        name=name,
        assumed=tuple(
            note
            for key, note in (
                ("tie_word_embeddings", "tie_word_embeddings absent: an output head of its own assumed"),
                ("intermediate_size", "intermediate_size absent: 4 × hidden_size assumed"),
            )
            if key not in config and not (key == "intermediate_size" and experts)
        ),
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
