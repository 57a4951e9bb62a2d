"""Quantization configs: names ↔ configs, JSON round-trip, and bad values refused with one clear error."""

import json

import pytest

from wattlm.compress.config import (
    CONFIGS,
    FP8Config,
    GPTQConfig,
    Int4WeightConfig,
    Int8WeightConfig,
    W8A8Config,
    config_from_dict,
    config_from_name,
)
from wattlm.errors import InvalidInputError

NAMES = ["int8", "w8a8", "w8a8-smooth", "int4-g128", "int4-g32-asym", "gptq4-g128", "gptq3-g64", "gptq2-g32-asym", "gptq8", "fp8"]


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
    assert set(CONFIGS) == {"int8", "w8a8", "int4", "gptq", "fp8"}


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
        (lambda: config_from_name("int5"), "unknown quantization"),
        (lambda: config_from_dict({"schema": "other/9", "technique": "int8"}), "schema"),
        (lambda: config_from_dict({**Int8WeightConfig().to_dict(), "bits": 4}), "unknown field"),
        (lambda: config_from_dict({**Int8WeightConfig().to_dict(), "technique": "int9"}), "unknown quantization technique"),
    ],
)
def test_bad_configs_are_refused_with_a_message_that_says_what_to_use(make, words):
    with pytest.raises(InvalidInputError, match=None) as info:
        make()
    assert words in str(info.value)


def test_calibrated_flags():
    assert GPTQConfig().calibrated and W8A8Config(smooth=True).calibrated
    assert not (Int8WeightConfig().calibrated or W8A8Config().calibrated or Int4WeightConfig().calibrated or FP8Config().calibrated)
