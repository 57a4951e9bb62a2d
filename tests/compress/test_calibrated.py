"""GPTQ and SmoothQuant: their own math on hand-made layers, then layer by layer on a tiny model."""

import copy

import pytest
import torch

from tests.tiny import tiny_llama  # noqa: E402
from wattlm.compress import GPTQConfig, W8A8Config, compress_  # noqa: E402
from wattlm.compress.calibration import sample_windows  # noqa: E402
from wattlm.compress.gptq import Hessians, gptq_quantize  # noqa: E402
from wattlm.compress.qlinear import Int4Linear, W8A8Linear  # noqa: E402
from wattlm.compress.quantize import from_codes, rtn_groups  # noqa: E402
from wattlm.compress.registry import targets  # noqa: E402
from wattlm.compress.smooth import smooth_  # noqa: E402
from wattlm.errors import InvalidInputError  # noqa: E402


def correlated_inputs(tokens=2048, dim=64, seed=0):
    """Inputs whose channels are strongly correlated (a low-rank mix plus noise), as in real layers."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(8, dim, generator=g)
    return torch.randn(tokens, 8, generator=g) @ mix + 0.05 * torch.randn(tokens, dim, generator=g)


def dequant(codes, scale, offset, group):
    n, k = codes.shape
    return from_codes(codes.reshape(-1, group), scale.reshape(-1), offset.reshape(-1)).reshape(n, k)


@pytest.mark.parametrize("bits, symmetric, group", [(4, True, 16), (3, True, 16), (4, False, 16), (8, True, 0)])
def test_gptq_output_error_is_below_round_to_nearest_on_correlated_inputs(bits, symmetric, group):
    x = correlated_inputs()
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    h = (x.t() @ x).double() / x.shape[0]
    size = group or 64  # 0: one group per row
    gptq = dequant(*gptq_quantize(w, h, bits=bits, group_size=group, symmetric=symmetric), size)
    rtn = dequant(*rtn_groups(w, size, bits, symmetric), size)
    err_gptq = float(((x @ (w - gptq).t()) ** 2).mean())
    err_rtn = float(((x @ (w - rtn).t()) ** 2).mean())
    assert err_gptq < 0.5 * err_rtn


def test_gptq_with_identity_hessian_is_round_to_nearest():
    """With uncorrelated unit-variance inputs there is no error to spread: GPTQ = RTN exactly."""
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(2))
    codes, scale, offset = gptq_quantize(
        w, torch.eye(32, dtype=torch.float64), bits=4, group_size=8, symmetric=True, damp=1e-9
    )
    rtn = rtn_groups(w, 8, 4, True)
    assert torch.equal(codes, rtn[0]) and torch.allclose(scale, rtn[1])


def test_hessians_are_shared_by_layers_fed_the_same_tensor_and_average_over_tokens():
    h = Hessians()
    x1, x2 = torch.randn(10, 4), torch.randn(6, 4)
    for x in (x1, x2):
        h("q", x)
        h("k", x)
    want = (x1.t() @ x1 + x2.t() @ x2).double() / 16
    assert torch.allclose(h.pop("q"), want) and torch.allclose(h.pop("k"), want)


def test_gptq_on_a_tiny_model_quantizes_every_linear_layer_by_layer_and_tracks_the_float_model():
    torch.manual_seed(0)
    calibration = torch.randint(0, 96, (12, 32))
    ids = torch.randint(0, 96, (2, 24))
    base = tiny_llama()
    model = copy.deepcopy(base)
    record = compress_(model, GPTQConfig(bits=4, group_size=16), calibration=calibration)
    assert len(record["modules"]) == 2 * 7 + 1  # lm_head too, calibrated on the final hidden states
    assert all(isinstance(model.get_submodule(n), Int4Linear) for n in record["modules"])
    rtn = copy.deepcopy(base)
    from wattlm.compress import Int4WeightConfig

    compress_(rtn, Int4WeightConfig(group_size=16))
    with torch.no_grad():
        ref = base(ids).logits
        err_gptq = float(((model(ids).logits - ref) ** 2).mean())
        err_rtn = float(((rtn(ids).logits - ref) ** 2).mean())
    assert err_gptq < err_rtn


def test_gptq8_gives_per_channel_int8_layers_that_reload_and_run_on_the_int8_kernel():
    from wattlm.compress import config_from_name
    from wattlm.compress.qlinear import Int8Linear

    config = config_from_name("gptq8")
    assert config == GPTQConfig(bits=8, group_size=0) and config.name == "gptq8"
    model = tiny_llama()
    record = compress_(model, config, calibration=torch.randint(0, 96, (6, 32)))
    assert record["kernel"]["scheme"] == "int8" and isinstance(model.lm_head, Int8Linear)
    assert int(model.model.layers[0].mlp.up_proj.qweight.abs().max()) <= 128
    with pytest.raises(InvalidInputError, match="per output channel"):
        GPTQConfig(bits=8, group_size=64)


def tiny_with_outliers():
    model = tiny_llama()
    with torch.no_grad():  # norms with uneven gains give activation channels of very different size
        for layer in model.model.layers:
            layer.input_layernorm.weight.copy_(torch.linspace(0.1, 8.0, 32))
            layer.post_attention_layernorm.weight.copy_(torch.linspace(8.0, 0.1, 32))
    return model


def test_smoothing_moves_scale_between_activations_and_weights_without_changing_the_function():
    torch.manual_seed(0)
    base = tiny_with_outliers()
    model = copy.deepcopy(base)
    ids = torch.randint(0, 96, (2, 24))
    alphas = smooth_(model, targets(model, ()), W8A8Config(smooth=True, alpha=0.5), torch.randint(0, 96, (4, 32)))
    assert set(alphas.values()) == {0.5} and len(alphas) == 2 * 3
    assert not torch.equal(model.model.layers[0].input_layernorm.weight, base.model.layers[0].input_layernorm.weight)
    assert torch.allclose(model(ids).logits, base(ids).logits, atol=1e-4)


def test_w8a8_smooth_calibrates_alpha_and_beats_plain_w8a8_on_outlier_activations():
    torch.manual_seed(0)
    calibration = torch.randint(0, 96, (8, 32))
    ids = torch.randint(0, 96, (4, 32))
    base = tiny_with_outliers()
    with torch.no_grad():
        ref = base(ids).logits
    errors = {}
    for config in (W8A8Config(), W8A8Config(smooth=True)):
        model = copy.deepcopy(base)
        record = compress_(model, config, calibration=calibration)
        assert isinstance(model.model.layers[0].mlp.down_proj, W8A8Linear)
        with torch.no_grad():
            errors[config.name] = float(((model(ids).logits - ref) ** 2).mean())
    assert set(record["details"]["alphas"].values()) <= set(W8A8Config().alpha_grid)
    assert errors["w8a8-smooth"] < errors["w8a8"]


def test_calibration_windows_are_seeded_distinct_and_refused_when_the_text_is_too_short():
    pool = torch.arange(1000)
    a, b = sample_windows(pool, 5, 100, seed=0), sample_windows(pool, 5, 100, seed=0)
    assert torch.equal(a, b) and a.shape == (5, 100)
    starts = a[:, 0].tolist()
    assert len(set(starts)) == 5 and all(s % 100 == 0 for s in starts)
    assert sample_windows(pool, 50, 100).shape == (10, 100)  # as many as there are
    with pytest.raises(InvalidInputError, match="longer text or calib_text FILE"):
        sample_windows(torch.arange(50), 5, 100)
