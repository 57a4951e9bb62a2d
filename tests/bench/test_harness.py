import sys
import types

import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer  # noqa: E402
from wattlm.bench.harness import check_out, resolve_device  # noqa: E402
from wattlm.environment import environment  # noqa: E402
from wattlm.errors import InvalidInputError  # noqa: E402
from wattlm.models.corpus import (
    load_dataset_text,  # noqa: E402
    tokenize_prefix,  # noqa: E402
)
from wattlm.models.load import save_plain  # noqa: E402


def test_tokenize_prefix_gives_exactly_the_first_tokens_of_the_whole_text():
    tok = tiny_tokenizer()
    text = "Now is the winter of our discontent. " * 2000
    whole = tok(text, add_special_tokens=False)["input_ids"]
    assert tokenize_prefix(tok, text, 5000).tolist() == whole[:5000]
    assert tokenize_prefix(tok, "short", 100).tolist() == tok("short", add_special_tokens=False)["input_ids"]


def test_a_gguf_model_is_kept_as_plain_safetensors_that_reload_identically(tmp_path):
    model = tiny_llama(seed=9)
    model.config.quantization_config = {"quant_method": "gguf"}  # what a GGUF load leaves behind
    save_plain(model, tmp_path)
    from transformers import AutoModelForCausalLM

    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.arange(1, 20)[None]
    assert torch.equal(model(ids).logits, again(ids).logits)
    assert "quantization_config" not in again.config.to_dict()


def test_devices_and_out_are_checked_before_any_work(tmp_path):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="no CUDA GPU"):
            resolve_device("cuda")
    check_out(tmp_path / "new" / "run")  # a folder that can be made
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(InvalidInputError, match="continue it with resume"):
        check_out(tmp_path / "full")


def test_dataset_text_through_the_datasets_library(monkeypatch):
    calls = []

    class Data:
        features = {"id": types.SimpleNamespace(dtype="int64"), "text": types.SimpleNamespace(dtype="string")}

        def __getitem__(self, column):
            return {"text": ["first line", "second line"]}[column]

    fake = types.ModuleType("datasets")
    fake.config = types.SimpleNamespace(HF_HUB_OFFLINE=False)
    fake.load_dataset = lambda name, config, split: calls.append((name, config, split)) or Data()
    monkeypatch.setitem(sys.modules, "datasets", fake)
    corpus = load_dataset_text("Salesforce/wikitext:wikitext-2-raw-v1:validation")
    assert calls == [("Salesforce/wikitext", "wikitext-2-raw-v1", "validation")]
    assert corpus.text == "first line\nsecond line" and "column 'text'" in corpus.source
    load_dataset_text("tiny_shakespeare")
    assert calls[-1] == ("tiny_shakespeare", None, "test")

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach the Hub")

    fake.load_dataset = offline
    with pytest.raises(InvalidInputError, match="could not load it .Couldn't reach"):
        load_dataset_text("wikitext")
    with pytest.raises(InvalidInputError, match="NAME:CONFIG:SPLIT"):
        load_dataset_text("a:b:c:d")


def test_environment_names_what_the_numbers_were_measured_on():
    env = environment(torch.device("cpu"))
    assert env["torch"] == torch.__version__ and env["torch_threads"] >= 1 and env["cpu"]
    assert isinstance(env["cpu_flags"], list)
