"""Grids, quantized layers and their kernels, on small seeded layers (no downloads)."""

import pytest
import torch
from torch import nn  # noqa: E402

from tests.tiny import tiny_llama  # noqa: E402
from wattlm.compress import FP8Config, Int4WeightConfig, Int8WeightConfig, W8A8Config, compress_  # noqa: E402
from wattlm.compress.kernels import SMALL_BATCH_ROWS, plan  # noqa: E402
from wattlm.compress.qlinear import (
    FP8Linear,
    Int4Linear,
    Int8Linear,
    W8A8Linear,
    pack_nibbles,
    unpack_nibbles,
)  # noqa: E402
from wattlm.compress.quantize import from_codes, rtn_groups  # noqa: E402
from wattlm.errors import InvalidInputError  # noqa: E402


def linear(n_out=48, n_in=64, seed=0, bias=True):
    torch.manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias=bias)
    layer.weight.data[3, 5] = 2.0  # an outlier: its row's scale must cover it
    return layer


def test_int8_rounds_every_weight_to_within_half_a_step_of_its_row_scale():
    layer = linear()
    q = Int8Linear.from_linear(layer)
    err = (q.dequantized() - layer.weight).abs()
    assert q.qweight.dtype == torch.int8 and int(q.qweight.abs().max()) == 127
    assert bool((err <= q.scale[:, None] / 2 + 1e-7).all())
    assert float(q.scale[3]) == pytest.approx(2.0 / 127)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_group_grids_keep_codes_in_range_and_errors_within_half_a_step(symmetric, bits):
    w = linear().weight.detach()
    codes, scale, offset = rtn_groups(w, 16, bits, symmetric)
    assert codes.shape == w.shape and scale.shape == (48, 4)
    lo, hi = (8 - 2 ** (bits - 1), 8 + 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    assert int(codes.min()) >= lo and int(codes.max()) <= hi
    deq = from_codes(codes.reshape(-1, 16), scale.reshape(-1), offset.reshape(-1)).reshape(w.shape)
    step = scale.repeat_interleave(16, dim=1)
    assert bool(((deq - w).abs() <= step / 2 + 1e-6).all())


def test_nibble_packing_round_trips_and_halves_the_bytes():
    codes = torch.randint(0, 16, (5, 8), dtype=torch.uint8)
    packed = pack_nibbles(codes)
    assert packed.shape == (5, 4) and torch.equal(unpack_nibbles(packed), codes)


@pytest.mark.parametrize(
    "make",
    [
        Int8Linear.from_linear,
        W8A8Linear.from_linear,
        lambda l: Int4Linear.from_codes(*rtn_groups(l.weight.detach(), 32, 4, False), 32, l.bias),
    ],
)
@pytest.mark.parametrize("rows", [1, SMALL_BATCH_ROWS, 40])
def test_each_layer_computes_x_times_its_dequantized_weights_on_both_kernel_paths(make, rows):
    layer = linear()
    q = make(layer)
    x = torch.randn(rows, 64)
    want = x @ q.dequantized().t() + layer.bias
    got = q(x)
    if isinstance(q, W8A8Linear):  # activations are rounded too: within one activation step per input
        step = x.abs().amax(dim=1, keepdim=True) / 127
        bound = (step / 2 * q.dequantized().abs().sum(dim=1)[None, :]) + 1e-4
        assert bool(((got - want).abs() <= bound).all())
    elif rows <= SMALL_BATCH_ROWS:  # the weight-only kernels take bf16 activations
        assert torch.allclose(got, want, rtol=0.02, atol=0.02)
    else:
        assert torch.allclose(got, want, atol=1e-5)
    assert got.shape == (rows, 48)


def test_w8a8_kernel_and_plain_integer_arithmetic_agree_exactly(monkeypatch):
    q = W8A8Linear.from_linear(linear())
    x = torch.randn(7, 64)
    fast = q(x)
    monkeypatch.setattr(W8A8Linear, "_kernel", lambda self, device: None)
    assert torch.equal(fast, q(x))


def test_fp8_layer_without_a_gpu_runs_its_reference_math_and_the_config_is_refused_on_cpu():
    layer = linear(bias=False)
    q = FP8Linear.from_linear(layer)
    x = torch.randn(3, 64)
    assert torch.allclose(q(x).float(), x @ layer.weight.t(), rtol=0.1, atol=0.1)
    before = q(x)
    q.to(torch.bfloat16)  # a precision step after fp8 must not cast the fp8 bits
    assert q.qweight.dtype == torch.uint8
    assert torch.allclose(q(x.bfloat16()).float(), before.float(), rtol=0.05, atol=0.05)
    assert q.fp8_weight().dtype == torch.float8_e4m3fn
    with pytest.raises(InvalidInputError, match="fp8 cannot run on cpu"):
        compress_(tiny_llama(), FP8Config())
    assert plan("fp8", "cpu").kernel is None


def test_compress_replaces_every_linear_but_the_kept_ones_and_records_what_it_did():
    model = tiny_llama()
    record = compress_(model, Int8WeightConfig(keep=("lm_head", "*.mlp.down_proj")))
    assert type(model.lm_head) is nn.Linear and type(model.model.layers[0].mlp.down_proj) is nn.Linear
    assert isinstance(model.model.layers[1].self_attn.q_proj, Int8Linear)
    assert len(record["modules"]) == 2 * 6 and record["kernel"]["scheme"] == "int8"
    assert model.config.wattlm_compression == [record]
    model(torch.randint(0, 96, (1, 8)))  # still runs


def test_bad_requests_fail_before_the_model_changes():
    model = tiny_llama()
    with pytest.raises(
        InvalidInputError, match=r"group size 64 does not divide the 32 inputs of .*use one that does \(8, 16, 32\)"
    ):
        compress_(model, Int4WeightConfig(group_size=64))
    with pytest.raises(InvalidInputError, match="calibrated"):
        compress_(model, W8A8Config(smooth=True))
    with pytest.raises(InvalidInputError, match="no plain nn.Linear layer left"):
        compress_(model, Int8WeightConfig(keep=("*",)))
    assert all(type(m) is not Int4Linear for m in model.modules()) and not hasattr(model.config, "wattlm_compression")


def test_quantized_models_track_the_float_model():
    torch.manual_seed(0)
    ids = torch.randint(0, 96, (2, 16))
    base = tiny_llama()
    with torch.no_grad():
        ref = base(ids).logits
    for config, tol in [(Int8WeightConfig(), 0.02), (W8A8Config(), 0.05), (Int4WeightConfig(group_size=16), 0.3)]:
        model = tiny_llama()
        compress_(model, config)
        with torch.no_grad():
            assert float((model(ids).logits - ref).abs().max()) < tol, config.name


def test_the_kernel_plan_follows_the_cpu_features_it_needs(monkeypatch):
    from wattlm.compress import kernels

    monkeypatch.setattr(kernels, "cpu_flags", lambda: frozenset({"avx2"}))  # an AVX2 CPU without VNNI
    kernels._plan.cache_clear()
    try:
        w8a8, int8 = plan("w8a8", "cpu"), plan("int8", "cpu")
        assert w8a8.kernel == "_int_mm" and not w8a8.fast and "no VNNI/AMX" in w8a8.note
        assert int8.fast and int8.kernel == "_weight_int8pack_mm"
        assert plan("int4", "cuda", 64).kernel is None and "de-quantized" in plan("int4", "cuda", 64).note
    finally:
        kernels._plan.cache_clear()
