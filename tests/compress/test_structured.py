"""Structured pruning (heads, channels, layers) and parameter sharing: shapes, reloading, errors."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM  # noqa: E402

from tests.tiny import tiny_llama, tiny_tokenizer  # noqa: E402
from wattlm.compress import StructuredConfig, compress_, config_from_name, load, save  # noqa: E402
from wattlm.compress.qlinear import Int8Linear  # noqa: E402
from wattlm.compress.structured import unique_params  # noqa: E402
from wattlm.errors import InvalidInputError  # noqa: E402

CALIB = torch.randint(0, 96, (8, 32), generator=torch.Generator().manual_seed(0))


def compressed(spec, model=None):
    model = model or tiny_llama(seed=2, layers=4)
    records = []
    with torch.no_grad():
        for name in spec.split("+"):
            config = config_from_name(name)
            records.append(compress_(model, config, calibration=CALIB if config.calibrated else None))
    return model, records


def consistent(model):
    c = model.config
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        assert a.q_proj.out_features == a.o_proj.in_features == c.num_attention_heads * c.head_dim
        assert a.k_proj.out_features == a.v_proj.out_features == c.num_key_value_heads * c.head_dim
        assert m.gate_proj.out_features == m.up_proj.out_features == m.down_proj.in_features == c.intermediate_size
        assert a.num_key_value_groups == c.num_attention_heads // c.num_key_value_heads
    assert len(model.model.layers) == c.num_hidden_layers
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(c.num_hidden_layers))


@pytest.mark.parametrize(
    "spec", ["struct25", "struct25-taylor", "struct30-h2", "struct25-layers", "struct50-layers-taylor"]
)
def test_structured_pruning_keeps_shapes_consistent_and_reloads_with_identical_logits(spec, tmp_path):
    model, (record,) = compressed(spec)
    consistent(model)
    details = record["details"]
    assert details["params_after"] == unique_params(model) < details["params_before"]
    assert record["kernel"]["fast"] is True
    with torch.no_grad():
        logits = model(input_ids=CALIB).logits
        # the KV cache path (layer_idx renumbered after layer removal) gives the same tokens as a full forward
        generated = model.generate(CALIB[:1, :6], max_new_tokens=5, do_sample=False)
        for step in range(5):
            full = model(input_ids=generated[:, : 6 + step]).logits[0, -1].argmax()
            assert int(full) == int(generated[0, 6 + step])
    save(model, tmp_path / "m", tiny_tokenizer())
    for reloaded in (AutoModelForCausalLM.from_pretrained(tmp_path / "m"), load(tmp_path / "m")[0]):
        with torch.no_grad():
            assert torch.equal(reloaded(input_ids=CALIB).logits, logits)


def test_width_pruning_removes_the_same_heads_from_every_key_value_group():
    model, (record,) = compressed("struct25-h2")
    assert record["details"]["heads_removed_per_layer"] == 2
    assert (
        model.config.num_attention_heads == 2 and model.config.num_key_value_heads == 2 and model.config.head_dim == 8
    )


def test_width_pruning_keeps_the_most_important_channels():
    base = tiny_llama(seed=3, layers=2)
    with torch.no_grad():  # make channel 5 of layer 0 carry a huge output: it must survive
        base.model.layers[0].mlp.down_proj.weight[:, 5] *= 100
        marked = base.model.layers[0].mlp.down_proj.weight[:, 5].clone()
    model, _ = compressed("struct40", base)
    down = model.model.layers[0].mlp.down_proj.weight
    assert any(torch.equal(down[:, j], marked) for j in range(down.shape[1]))


@pytest.mark.parametrize(
    "spec, unit", [("struct25-layers", "layer"), ("struct25", "channels"), ("struct40", "channels")]
)
def test_the_share_removed_is_the_asked_share_to_within_half_a_removable_unit(spec, unit):
    model = tiny_llama(seed=2, layers=8)
    before = unique_params(model)
    layer = model.model.layers[0]
    # one unit: a whole layer, or CHANNEL_MULTIPLE (8) MLP channels in each of the 8 layers (3 weights of 32 each)
    size = sum(p.numel() for p in layer.parameters()) if unit == "layer" else 8 * 8 * 3 * 32
    _, (record,) = compressed(spec, model)
    asked = int(spec[6:8]) / 100
    assert abs(record["details"]["fraction_removed"] - asked) <= size / 2 / before + 1e-9


@pytest.mark.parametrize(
    "config, words",
    [
        (StructuredConfig(fraction=0.25, heads=4), "without a query head"),
        (StructuredConfig(fraction=0.25, heads=1), "multiple of 2"),
        (StructuredConfig(fraction=0.95), "every MLP channel"),
        (StructuredConfig(fraction=0.9, unit="layers"), "all 4 decoder layers"),
    ],
)
def test_impossible_structured_pruning_is_refused_before_changing_the_model(config, words):
    model = tiny_llama(seed=2, layers=4)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidInputError, match=words):
        with torch.no_grad():
            compress_(model, config, calibration=CALIB)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: StructuredConfig(fraction=1.0), "(0, 1)"),
        (lambda: StructuredConfig(unit="rows"), "unit"),
        (lambda: StructuredConfig(heads=2, unit="layers"), "heads applies to width"),
    ],
)
def test_bad_structured_configs(make, words):
    with pytest.raises(InvalidInputError) as info:
        make()
    assert words in str(info.value)


# -- parameter sharing ------------------------------------------------------------------------------


def test_sharing_ties_each_group_to_one_set_of_linear_layers_and_reloads_identically(tmp_path):
    base = tiny_llama(seed=2, layers=5)
    layers0 = [copy.deepcopy(l.mlp.up_proj.weight) for l in base.model.layers]
    model, (record,) = compressed("share2", base)
    layers = model.model.layers
    assert record["details"]["groups"] == [[0, 1], [2, 3], [4]]
    assert layers[0].mlp.up_proj is layers[1].mlp.up_proj and layers[2].self_attn.q_proj is layers[3].self_attn.q_proj
    assert (
        layers[1].mlp.up_proj is not layers[2].mlp.up_proj
        and layers[0].input_layernorm is not layers[1].input_layernorm
    )
    assert torch.allclose(layers[0].mlp.up_proj.weight, (layers0[0] + layers0[1]) / 2)
    assert torch.equal(layers[4].mlp.up_proj.weight, layers0[4])
    per_layer_linear = sum(p.numel() for n, p in tiny_llama(layers=1).model.layers[0].named_parameters() if "proj" in n)
    assert unique_params(model) == unique_params(tiny_llama(layers=5)) - 2 * per_layer_linear
    with torch.no_grad():
        logits = model(input_ids=CALIB).logits
    save(model, tmp_path / "m", tiny_tokenizer())
    with pytest.raises(
        ValueError, match="wattlm-quantized"
    ):  # transformers would fill the unsaved copies with random weights
        AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    reloaded, _ = load(tmp_path / "m")
    assert reloaded.model.layers[0].mlp.up_proj is reloaded.model.layers[1].mlp.up_proj
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=CALIB).logits, logits)


def test_quantizing_a_shared_model_quantizes_each_shared_layer_once(tmp_path):
    model, _ = compressed("share2-first+int8", tiny_llama(seed=2, layers=4))
    layers = model.model.layers
    assert isinstance(layers[1].mlp.down_proj, Int8Linear) and layers[0].mlp.down_proj is layers[1].mlp.down_proj
    with torch.no_grad():
        logits = model(input_ids=CALIB).logits
    save(model, tmp_path / "m", tiny_tokenizer())
    reloaded, _ = load(tmp_path / "m")
    assert reloaded.model.layers[0].mlp.down_proj is reloaded.model.layers[1].mlp.down_proj
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=CALIB).logits, logits)


def test_sharing_needs_a_group_the_model_can_fill():
    with pytest.raises(InvalidInputError, match="at least 2"):
        config_from_name("share1")
    with pytest.raises(InvalidInputError, match="fewer than a group of 9"):
        compressed("share9", tiny_llama(layers=4))
