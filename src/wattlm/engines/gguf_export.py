"""A Llama-family model in memory → a float GGUF file (F32 or F16) that llama.cpp loads.

Why not llama.cpp's `convert_hf_to_gguf.py`: it is not in any installable package (it lives in
llama.cpp's source tree) and it reads a model folder, while wattlm exports the model it holds —
after width or depth pruning, weight sharing, distillation, or with wattlm's int8/int4 layers
de-quantized — so it writes the few tensors and keys of llama.cpp's `llama` architecture itself,
with the `gguf` package's writer. Quantizing the float file is llama.cpp's job (llamacpp.quantize),
except for weights wattlm has already put on one of llama.cpp's block formats (a module carrying
`wattlm_gguf_blocks`, see compress.gguf_blocks): those blocks are written as they are.

Tensor layout: GGUF stores a [out, in] PyTorch weight as is (ggml lists dimensions innermost
first). Rotary embeddings differ: transformers rotates the two halves of each head (rotate_half),
llama.cpp's `llama` rotates adjacent pairs, so q_proj and k_proj rows are reordered per head from
[x_0..x_{d/2-1}, y_0..y_{d/2-1}] to [x_0, y_0, x_1, y_1, ...].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compress.gguf_blocks import BLOCKS
from ..errors import InvalidInputError

ARCHITECTURES = {"llama": "llama", "mistral": "llama"}  # transformers model_type → llama.cpp architecture
FLOAT_FILE_TYPES = ("f32", "f16")


@dataclass(frozen=True)
class Entry:
    """One GGUF tensor: its name, [out, in] shape, a function giving its float32 torch tensor, and the
    block-format weight to write instead (None: written as a float)."""

    name: str
    shape: tuple[int, ...]
    make: Callable[[], Any]
    blocks: Any = None
    rows: Callable[[Any], Any] = lambda x: x  # the row order the file wants (rotary pairs for q and k)


@dataclass(frozen=True)
class Shapes:
    layers: int
    hidden: int
    head_dim: int
    heads: list[int]  # query heads per layer (width pruning keeps them equal, but GGUF allows a list)
    kv_heads: list[int]
    ff: list[int]  # MLP width per layer
    vocab: int
    tied: bool


def check_exportable(config: Any) -> None:
    """Refuse, before any work, what the `llama` architecture of llama.cpp would run wrongly."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise InvalidInputError(
            f"GGUF export supports Llama-family models ({', '.join(ARCHITECTURES)}: SmolLM, TinyLlama, Llama 2,"
            f" Mistral, ...); this one is {model_type!r}: convert it with llama.cpp's convert_hf_to_gguf.py instead"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") not in ("default", "linear"):
        raise InvalidInputError(
            f"GGUF export does not write rope scaling {rope.get('rope_type')!r} (only none or linear)"
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise InvalidInputError("GGUF export does not write Llama layers with biases (attention_bias / mlp_bias)")


def shapes(model: Any) -> Shapes:
    layers = model.model.layers
    head_dim = layers[0].self_attn.head_dim
    c = model.config

    def out(module: Any) -> int:
        return int(module.out_features)

    embed = model.get_input_embeddings().weight
    head = getattr(model.get_output_embeddings(), "weight", None)  # a quantized lm_head keeps its own codes
    return Shapes(
        layers=len(layers),
        hidden=int(c.hidden_size),
        head_dim=int(head_dim),
        heads=[out(l.self_attn.q_proj) // head_dim for l in layers],
        kv_heads=[out(l.self_attn.k_proj) // head_dim for l in layers],
        ff=[out(l.mlp.gate_proj) for l in layers],
        vocab=int(embed.shape[0]),
        tied=head is not None and head.data_ptr() == embed.data_ptr(),
    )


def _weight(module: Any) -> Any:
    """A linear layer's float weight: wattlm's quantized layers de-quantized (the values they compute with)."""
    import torch

    dequantized = getattr(module, "dequantized", None)
    return (dequantized(torch.float32) if dequantized is not None else module.weight).detach().float().cpu()


def rotary_to_pairs(weight: Any, heads: int) -> Any:
    """[heads·d, in] rows from transformers' half-split rotary layout to llama.cpp's adjacent pairs."""
    out_features, in_features = weight.shape
    d = out_features // heads
    return weight.reshape(heads, 2, d // 2, in_features).transpose(1, 2).reshape(out_features, in_features)


def _linear_shape(module: Any) -> tuple[int, ...]:
    return (int(module.out_features), int(module.in_features))  # nn.Linear and wattlm's quantized layers alike


def tensors(model: Any, s: Shapes) -> list[Entry]:
    """The GGUF tensors in the order llama.cpp's own converter writes them. Functions, so that the
    writer holds one converted tensor at a time, not a copy of the model; shapes from the modules, so
    the header needs no tensor computed."""
    m = model.model
    norm = (s.hidden,)

    def weight(name: str, module: Any, heads: int | None = None) -> Entry:
        def rows(x: Any) -> Any:
            return rotary_to_pairs(x, heads) if heads is not None else x

        shape = tuple(module.weight.shape) if name == "token_embd.weight" else _linear_shape(module)
        return Entry(name, shape, lambda: rows(_weight(module)), getattr(module, BLOCKS, None), rows)

    named = [weight("token_embd.weight", m.embed_tokens)]
    for i, layer in enumerate(m.layers):
        a, f = layer.self_attn, layer.mlp
        named += [
            Entry(f"blk.{i}.attn_norm.weight", norm, lambda layer=layer: layer.input_layernorm.weight),
            weight(f"blk.{i}.attn_q.weight", a.q_proj, s.heads[i]),
            weight(f"blk.{i}.attn_k.weight", a.k_proj, s.kv_heads[i]),
            weight(f"blk.{i}.attn_v.weight", a.v_proj),
            weight(f"blk.{i}.attn_output.weight", a.o_proj),
            Entry(f"blk.{i}.ffn_norm.weight", norm, lambda layer=layer: layer.post_attention_layernorm.weight),
            weight(f"blk.{i}.ffn_gate.weight", f.gate_proj),
            weight(f"blk.{i}.ffn_up.weight", f.up_proj),
            weight(f"blk.{i}.ffn_down.weight", f.down_proj),
        ]
    named.append(Entry("output_norm.weight", norm, lambda: m.norm.weight))
    if not s.tied:
        named.append(weight("output.weight", model.lm_head))
    return named


def _dtype(file_type: str, ndim: int) -> Any:
    """float32, or float16 for 2-D weights of an F16 file (norms stay F32, as llama.cpp keeps them)."""
    import numpy as np

    return np.dtype(np.float32 if file_type == "f32" or ndim == 1 else np.float16)


def one_or_list(values: list[int]) -> int | list[int]:
    return values[0] if len(set(values)) == 1 else values


def write_hparams(writer: Any, model: Any, s: Shapes, name: str) -> None:
    import gguf

    c = model.config
    rope = getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}
    writer.add_name(name)
    writer.add_context_length(int(c.max_position_embeddings))
    writer.add_embedding_length(s.hidden)
    writer.add_block_count(s.layers)
    writer.add_feed_forward_length(one_or_list(s.ff))
    writer.add_head_count(one_or_list(s.heads))
    writer.add_head_count_kv(one_or_list(s.kv_heads))
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    writer.add_rope_dimension_count(s.head_dim)
    if len(set(s.heads)) > 1 or s.heads[0] * s.head_dim != s.hidden:  # width pruning removed query heads
        writer.add_key_length(s.head_dim)
        writer.add_value_length(s.head_dim)
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_vocab_size(s.vocab)


def _file_type(file_type: str, named: list[Entry]) -> Any:
    """The file's type: the block format most of the weights are on, else F32 / F16."""
    import gguf

    kinds = [e.blocks.fmt.name for e in named if e.blocks is not None]
    if kinds:
        return gguf.LlamaFileType[f"MOSTLY_{max(set(kinds), key=kinds.count).upper()}"]
    return gguf.LlamaFileType.ALL_F32 if file_type == "f32" else gguf.LlamaFileType.MOSTLY_F16


def _write(model: Any, path: Path, name: str, add_vocab: Callable[[Any, int], None], file_type: str | None) -> Shapes:
    """Hyper-parameters, tokenizer keys and (unless `file_type` is None) the tensors, streamed."""
    import gguf
    import numpy as np
    import torch

    s = shapes(model)
    writer = gguf.GGUFWriter(str(path), ARCHITECTURES[model.config.model_type])
    write_hparams(writer, model, s, name)
    named = tensors(model, s) if file_type is not None else []
    if file_type is not None:
        writer.add_file_type(_file_type(file_type, named))
    add_vocab(writer, s.vocab)
    float_type = file_type or "f32"  # no tensors are written without a file type
    for e in named:  # shapes and types first (the header), data after
        if e.blocks is not None:
            byte_shape = [e.shape[0], e.shape[1] // 32 * e.blocks.fmt.bytes_per_block]
            writer.add_tensor_info(e.name, byte_shape, np.dtype(np.uint8), math.prod(byte_shape), e.blocks.fmt.qtype)
            continue
        dtype = _dtype(float_type, len(e.shape))
        writer.add_tensor_info(e.name, list(e.shape), dtype, math.prod(e.shape) * dtype.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for e in named:
        if e.blocks is not None:  # the packed rows, in the file's row order
            writer.write_tensor_data(e.rows(torch.from_numpy(e.blocks.packed())).contiguous().numpy())
            continue
        writer.write_tensor_data(
            e.make().detach().float().cpu().contiguous().numpy().astype(_dtype(float_type, len(e.shape)), copy=False)
        )
    writer.close()
    return s


def write_float_gguf(
    model: Any, path: Path, file_type: str, name: str, add_vocab: Callable[[Any, int], None]
) -> Shapes:
    """Write `model` as an F32 or F16 GGUF at `path`; `add_vocab(writer, vocab_size)` adds the tokenizer keys."""
    check_exportable(model.config)
    if file_type not in FLOAT_FILE_TYPES:
        raise InvalidInputError(f"float GGUF type {file_type!r}: use one of {', '.join(FLOAT_FILE_TYPES)}")
    return _write(model, path, name, add_vocab, file_type)


def write_vocab_only(model: Any, path: Path, add_vocab: Callable[[Any, int], None]) -> None:
    """Hyper-parameters and tokenizer keys, no tensors: what llama.cpp reads to tokenize (vocab_only)."""
    _write(model, path, "vocab", add_vocab, None)
