"""Compression configs (quantization, pruning, sharing): names ↔ configs, JSON round-trip, and bad
values refused with one clear error."""

import json

import pytest

from wattlm.compress.config import (
    CONFIGS,
    FP8Config,
    GPTQConfig,
    Int4WeightConfig,
    Int8WeightConfig,
    PruneConfig,
    ShareConfig,
    StructuredConfig,
    W8A8Config,
    config_from_dict,
    config_from_name,
)
from wattlm.errors import InvalidInputError

NAMES = [
    "int8",
    "w8a8",
    "w8a8-smooth",
    "int4-g128",
    "int4-g32-asym",
    "gptq4-g128",
    "gptq3-g64",
    "gptq2-g32-asym",
    "gptq8",
    "fp8",
    "magnitude50",
    "l2shrink50",
    "taylor50",
    "fisher30",
    "wanda50",
    "sparsegpt50",
    "magnitude37.5",
    "wanda-2:4",
    "sparsegpt-4:8",
    "magnitude50-global",
    "wanda50-layer",
    "taylor50-row",
    "struct25",
    "struct20-layers",
    "struct30-h3-taylor",
    "share2",
    "share4-first",
]


@pytest.mark.parametrize("name", NAMES)
def test_every_variant_name_maps_to_a_config_that_has_that_name_and_round_trips_through_json(name):
    config = config_from_name(name)
    assert config.name == name
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and type(again) is type(config)


def test_names_carry_their_numbers():
    assert config_from_name("gptq3-g64") == GPTQConfig(bits=3, group_size=64)
    assert config_from_name("int4-g32-asym") == Int4WeightConfig(group_size=32, symmetric=False)
    assert config_from_name("w8a8-smooth") == W8A8Config(smooth=True)
    assert config_from_name("int8", keep=("lm_head",)).keep == ("lm_head",)
    assert set(CONFIGS) == {"int8", "w8a8", "int4", "gptq", "fp8", "prune", "struct", "share"}
    assert (
        config_from_name("wanda-2:4") == PruneConfig(method="wanda", n=2, m=4)
        and config_from_name("wanda-2:4").sparsity == 0.5
    )
    assert config_from_name("magnitude50-layer") == PruneConfig(sparsity=0.5)  # the default scope has one spelling
    assert config_from_name("struct25-layers-taylor") == StructuredConfig(
        fraction=0.25, unit="layers", importance="taylor"
    )
    assert config_from_name("share3-first") == ShareConfig(group=3, init="first")
    assert PruneConfig().keep == ("lm_head",) and Int8WeightConfig().keep == ()


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: GPTQConfig(bits=5), "bits must be 2, 3, 4 or 8"),
        (lambda: GPTQConfig(group_size=48), "power of two"),
        (lambda: GPTQConfig(group_size=0), "needs a group size"),
        (lambda: GPTQConfig(bits=8, group_size=0, symmetric=False), "per output channel and symmetric"),
        (lambda: GPTQConfig(damp=0), "damp"),
        (lambda: Int4WeightConfig(group_size=4), "power of two"),
        (lambda: Int4WeightConfig(group_size=0), "needs a group size"),
        (lambda: W8A8Config(smooth=True, alpha=1.5), "[0, 1]"),
        (lambda: W8A8Config(alpha=0.5), "only applies with smooth"),
        (lambda: Int8WeightConfig(keep="lm_head"), "list of module-name patterns"),
        (lambda: config_from_name("int5"), "unknown compression"),
        (lambda: config_from_dict({"schema": "other/9", "technique": "int8"}), "schema"),
        (lambda: config_from_dict({**Int8WeightConfig().to_dict(), "bits": 4}), "unknown field"),
        (
            lambda: config_from_dict({**Int8WeightConfig().to_dict(), "technique": "int9"}),
            "unknown compression technique",
        ),
    ],
)
def test_bad_configs_are_refused_with_a_message_that_says_what_to_use(make, words):
    with pytest.raises(InvalidInputError, match=None) as info:
        make()
    assert words in str(info.value)


def test_calibrated_flags():
    assert GPTQConfig().calibrated and W8A8Config(smooth=True).calibrated
    assert not (
        Int8WeightConfig().calibrated
        or W8A8Config().calibrated
        or Int4WeightConfig().calibrated
        or FP8Config().calibrated
    )
