"""llama.cpp's block formats in wattlm: grids that round-trip, bytes the gguf reader de-quantizes to
exactly wattlm's values, GPTQ on the block grid beating plain rounding on it, and a calibrated GGUF
that llama.cpp runs as the model wattlm holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.engines.test_export import engine, export, hf_logits, ids, llama_cpp_or_skip, model
from tests.tiny import tiny_bpe_tokenizer
from wattlm.compress.gguf_blocks import BLOCK, FORMATS, IQ4_NL_LEVELS, BlockTensor, round_to_nearest
from wattlm.compress.gguf_gptq import gptq_to_blocks_
from wattlm.compress.gptq import Hessians, gptq_quantize
from wattlm.engines import gguf_export
from wattlm.errors import InvalidInputError

NAMES = tuple(FORMATS)


def weights(rows=48, cols=96, seed=0):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 0.05
    w[0] = 0.0  # an all-zero row: scale 0, and nothing may become NaN
    w[1, :BLOCK] = 3.0  # a block of equal weights
    return w


@pytest.mark.parametrize("name", NAMES)
def test_bytes_dequantize_in_the_gguf_reader_to_exactly_wattlms_values(name):
    import gguf

    blocks = round_to_nearest(weights(), FORMATS[name])
    packed = blocks.packed()
    assert packed.dtype == np.uint8 and packed.shape == (48, 96 // BLOCK * FORMATS[name].bytes_per_block)
    theirs = gguf.quants.dequantize(packed, FORMATS[name].qtype)
    assert np.array_equal(theirs, blocks.values().numpy())  # bit for bit
    assert np.isfinite(theirs).all() and (theirs[0] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_weights_on_the_grid_round_trip_exactly(name):
    fmt = FORMATS[name]
    gen = torch.Generator().manual_seed(1)
    n, nb = 16, 3
    d = (torch.rand(n * nb, generator=gen) * 0.01 + 0.001).half().float()
    m = (-torch.rand(n * nb, generator=gen) * 0.05).half().float() if name == "q4_1" else torch.zeros(n * nb)
    low, high = (-127, 127) if name == "q8_0" else (0, 15)
    codes = torch.randint(low, high + 1, (n * nb, BLOCK), generator=gen, dtype=torch.int16)
    # Each block uses its extreme levels, as a block quantized by llama.cpp's rule does.
    if name in ("q4_0", "iq4_nl"):
        codes[:, 0] = 0
    else:
        codes[:, 0], codes[:, 1] = low, high
    grid = fmt.values(codes, d, m).reshape(n, nb * BLOCK)
    again = round_to_nearest(grid, fmt)
    assert torch.equal(again.values(), grid)


def test_levels_are_llamacpps():
    fmt = FORMATS["iq4_nl"]
    d = torch.tensor([0.5])
    assert fmt.values(torch.arange(16, dtype=torch.int16)[None], d, d * 0)[0].tolist() == [
        v * 0.5 for v in IQ4_NL_LEVELS
    ]
    assert FORMATS["q4_0"].values(torch.tensor([[0, 8, 15]], dtype=torch.int16), d, d * 0)[0].tolist() == [
        -4.0,
        0.0,
        3.5,
    ]
    with pytest.raises(InvalidInputError, match="not a multiple of 32"):
        gptq_to_blocks_(tiny_llama_wide(40), "q4_0", torch.zeros(1, 8, dtype=torch.long))


def tiny_llama_wide(hidden):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=hidden, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("name", NAMES)
def test_gptq_on_the_block_grid_beats_rounding_to_nearest_on_it(name):
    # Correlated inputs, as a layer sees them: GPTQ's error feedback can use the correlation.
    gen = torch.Generator().manual_seed(2)
    mix = torch.randn(64, 64, generator=gen)
    x = torch.randn(2048, 64, generator=gen) @ mix
    w = torch.randn(32, 64, generator=gen) * 0.1
    hessians = Hessians()
    hessians("layer", x)
    fmt = FORMATS[name]
    codes, d, m = gptq_quantize(w, hessians.pop("layer"), group_size=BLOCK, on=fmt)
    calibrated = BlockTensor(fmt, codes, d, m).values()
    plain = round_to_nearest(w, fmt).values()

    def output_error(q):
        return float(((x @ w.T - x @ q.T) ** 2).mean())

    assert output_error(calibrated) < 0.8 * output_error(plain), (output_error(calibrated), output_error(plain))
    low, high = (-127, 127) if name == "q8_0" else (0, 15)
    assert low <= int(codes.min()) and int(codes.max()) <= high
    assert torch.equal(d, d.half().float()) and torch.equal(m, m.half().float())  # float16 scales, as stored


@pytest.mark.engines
@pytest.mark.parametrize("name", ["q4_0", "iq4_nl", "q4_1", "q8_0"])
def test_a_calibrated_gguf_holds_wattlms_blocks_and_runs_in_llamacpp_as_the_model_in_memory(name, tmp_path):
    import gguf

    llama_cpp_or_skip()
    tok = tiny_bpe_tokenizer()
    m = model(vocab=304)
    calibration = torch.randint(0, 300, (8, 32), generator=torch.Generator().manual_seed(5))
    info = gptq_to_blocks_(m, name, calibration)
    assert info["layers"] == 2 * 7 and info["calibration_tokens"] == 8 * 32
    path = tmp_path / f"{name}.gguf"
    written = export(m, tok, path, f"gptq-{name}")
    assert written["quantizer"] == "wattlm GPTQ onto llama.cpp's blocks"
    reader = gguf.GGUFReader(str(path))
    by_name = {t.name: t for t in reader.tensors}
    assert by_name["token_embd.weight"].tensor_type.name == "Q8_0"
    assert by_name["blk.0.ffn_down.weight"].tensor_type.name == name.upper()
    assert by_name["blk.0.attn_norm.weight"].tensor_type.name == "F32"
    # What llama.cpp reads from the file is, bit for bit, what the model in memory computes with.
    shapes = gguf_export.shapes(m)
    for entry in gguf_export.tensors(m, shapes):
        if entry.blocks is None:
            continue
        tensor = by_name[entry.name]
        theirs = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        assert np.array_equal(theirs, entry.make().numpy()), entry.name
    # llama.cpp's logits follow the model's (its kernels round activations to 8 bits: close, not equal).
    row = ids(32)
    want = torch.log_softmax(hf_logits(m, row).double(), -1)
    got = torch.log_softmax(engine(path).window_logits(row[0]).double(), -1)
    kl = float((want.exp() * (want - got)).sum(-1).mean())
    assert -1e-9 <= kl < 5e-3, kl


def test_an_uncalibrated_model_is_refused_for_a_calibrated_type(tmp_path):
    from wattlm.engines.export import check_type, export_gguf

    with pytest.raises(InvalidInputError, match="needs the model calibrated"):
        export_gguf(model(), tiny_bpe_tokenizer(), tmp_path / "x.gguf", "gptq-q4_0", name="tiny")
    with pytest.raises(InvalidInputError, match="gptq-q4_0, gptq-q4_1"):
        check_type("gptq-q3")
    assert not (tmp_path / "x.gguf").exists()


def test_a_size_budget_raises_the_embeddings_then_the_most_sensitive_layers_per_byte():
    from wattlm.compress.gguf_gptq import plan_types, weight_bytes
    from wattlm.errors import ConfigError

    shapes = {"token_embd": (64, 32), "a": (32, 32), "b": (32, 64), "c": (32, 32)}
    sensitivity = {"token_embd": float("inf"), "a": 0.01, "b": 0.015, "c": 0.002}  # per extra byte: a > b > c
    floor = sum(weight_bytes(s, "q4_0") for s in shapes.values())
    assert plan_types(shapes, sensitivity, "q4_0", floor, "token_embd") == dict.fromkeys(shapes, "q4_0")
    extra = {n: weight_bytes(s, "q8_0") - weight_bytes(s, "q4_0") for n, s in shapes.items()}
    got = plan_types(shapes, sensitivity, "q4_0", floor + extra["token_embd"] + extra["a"], "token_embd")
    assert got == {"token_embd": "q8_0", "a": "q8_0", "b": "q4_0", "c": "q4_0"}
    roomy = plan_types(shapes, sensitivity, "q4_0", 10**6, "token_embd")
    assert set(roomy.values()) == {"q8_0"}
    with pytest.raises(ConfigError, match="below the smallest Q4_0 file's weights"):
        plan_types(shapes, sensitivity, "q4_0", floor - 1, "token_embd")


def test_sensitivity_is_the_kl_of_rounding_one_layer_and_leaves_the_model_as_it_was():
    from wattlm.compress.gguf_gptq import sensitivities

    m = model(vocab=304)
    targets = {
        "model.layers.0.mlp.down_proj": m.model.layers[0].mlp.down_proj,
        "model.layers.1.self_attn.q_proj": m.model.layers[1].self_attn.q_proj,
    }
    before = {n: t.weight.clone() for n, t in targets.items()}
    kl = sensitivities(m, targets, "q4_0", torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(3)))
    assert set(kl) == set(targets) and all(v > 0 for v in kl.values())
    assert all(torch.equal(before[n], t.weight) for n, t in targets.items())
    assert (
        sensitivities(m, targets, "q8_0", torch.randint(0, 300, (2, 32)))["model.layers.0.mlp.down_proj"]
        < kl["model.layers.0.mlp.down_proj"]
    )


@pytest.mark.engines
def test_a_budgeted_export_mixes_types_within_the_budget(tmp_path):
    import gguf

    from wattlm.compress.gguf_gptq import weight_bytes

    llama_cpp_or_skip()
    m = model(vocab=304)
    calibration = torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(5))
    shapes = [tuple(p.shape) for n, p in m.named_parameters() if p.dim() == 2]
    floor = sum(weight_bytes(s, "q4_0") for s in shapes)
    # Room for the embeddings and the (untied) output layer at Q8_0, 304 × 32 each at 0.5 byte more per
    # weight, and for about three 32 × 32 layers more.
    budget = floor + 2 * 304 * 32 // 2 + 1600
    info = gptq_to_blocks_(m, "q4_0", calibration, size_budget_bytes=budget)
    assert info["embedding"].startswith("q8_0") and 0 < len(info["layers_at_q8_0"]) < 14
    export(m, tiny_bpe_tokenizer(), tmp_path / "mix.gguf", "gptq-q4_0")
    tensors = gguf.GGUFReader(str(tmp_path / "mix.gguf")).tensors
    blocks = [t for t in tensors if t.tensor_type.name in ("Q4_0", "Q8_0")]
    assert {t.tensor_type.name for t in blocks} == {"Q4_0", "Q8_0"}
    assert sum(int(t.n_bytes) for t in blocks) <= budget


def test_act_order_fits_every_block_first_and_helps_where_inputs_differ_in_weight():
    gen = torch.Generator().manual_seed(4)
    scale = torch.logspace(-1.5, 1.0, 96)[torch.randperm(96, generator=gen)]  # inputs of very unequal size
    x = (torch.randn(4096, 96, generator=gen) @ torch.randn(96, 96, generator=gen) * 0.3) * scale
    w = torch.randn(48, 96, generator=gen) * 0.1
    hessians = Hessians()
    hessians("layer", x)
    h = hessians.pop("layer")
    fmt = FORMATS["q4_0"]
    errors = {}
    for act in (False, True):
        codes, d, m = gptq_quantize(w, h, group_size=BLOCK, on=fmt, act_order=act)
        q = BlockTensor(fmt, codes, d, m).values()
        errors[act] = float(((x @ w.T - x @ q.T) ** 2).mean())
        if act:  # static groups: every block's scale is the one fitted to the weights before the pass
            importance = torch.diag(h).float()
            for g in range(96 // BLOCK):
                cols = slice(g * BLOCK, (g + 1) * BLOCK)
                assert torch.equal(d[:, g], fmt.fit(w[:, cols], importance[cols])[0])
    assert errors[True] < errors[False], errors
