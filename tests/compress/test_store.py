"""Save and reload: safetensors only, bit-identical logits, no half-written folders, loud misuse."""

import json

import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer  # noqa: E402
from wattlm.compress import (  # noqa: E402
    GPTQConfig,
    Int4WeightConfig,
    Int8WeightConfig,
    W8A8Config,
    compress_,
    is_compressed,
    load,
    save,
)
from wattlm.errors import InvalidInputError  # noqa: E402

CONFIGS = [
    Int8WeightConfig(),
    W8A8Config(smooth=True),
    Int4WeightConfig(group_size=16, symmetric=False),
    GPTQConfig(bits=3, group_size=8),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_saved_model_reloads_to_bit_identical_logits(tmp_path, config, dtype):
    torch.manual_seed(0)
    model = tiny_llama().to(dtype)
    compress_(model, config, calibration=torch.randint(0, 96, (4, 32)))
    folder = save(model, tmp_path / "q", tiny_tokenizer())
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("tokenizer")) == [
        "config.json",
        "model.safetensors",
    ]
    assert is_compressed(folder)
    again, tokenizer = load(folder)
    assert tokenizer is not None and next(again.parameters()).dtype == dtype
    for rows in (1, 24):  # both kernel paths
        ids = torch.randint(0, 96, (1, rows))
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert again.config.wattlm_compression[0]["name"] == config.name


def test_int4_is_stored_as_packed_nibbles(tmp_path):
    from safetensors import safe_open

    model = tiny_llama()
    compress_(model, Int4WeightConfig(group_size=16))
    save(model, tmp_path / "q")
    with safe_open(str(tmp_path / "q" / "model.safetensors"), "pt") as f:
        q = f.get_tensor("model.layers.0.mlp.up_proj.qweight")
    assert q.dtype == torch.uint8 and q.shape == (64, 16)  # [out, in / 2]


def test_transformers_refuses_the_folder_instead_of_loading_random_weights(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_llama()
    compress_(model, Int8WeightConfig())
    save(model, tmp_path / "q")
    assert json.loads((tmp_path / "q" / "config.json").read_text())["model_type"] == "wattlm-quantized"
    with pytest.raises(ValueError, match="wattlm-quantized"):
        AutoModelForCausalLM.from_pretrained(str(tmp_path / "q"))


def test_save_refuses_an_existing_folder_or_an_uncompressed_model_and_writes_nothing(tmp_path):
    model = tiny_llama()
    with pytest.raises(InvalidInputError, match="not compressed by wattlm"):
        save(model, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    compress_(model, Int8WeightConfig())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="already exists"):
        save(model, tmp_path / "b")
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary folder left behind


def test_load_explains_a_damaged_folder(tmp_path):
    model = tiny_llama()
    compress_(model, Int8WeightConfig())
    save(model, tmp_path / "q")
    (tmp_path / "q" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InvalidInputError, match="cannot be read"):
        load(tmp_path / "q")
    with pytest.raises(InvalidInputError, match="no wattlm-compressed model"):
        load(tmp_path)
