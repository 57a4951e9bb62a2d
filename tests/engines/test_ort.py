"""ONNX Runtime GenAI as a bench engine: the builder's fp32 model gives transformers' logits and
greedy tokens, int8/int4 stay close and shrink, and the bench runs ort variants beside the others."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from tests.fakes.sources import ScriptedSource
from tests.tiny import BPE_TEXT, tiny_bpe_tokenizer
from wattlm.errors import InvalidInputError

pytestmark = pytest.mark.engines


def ort_or_skip():
    """CI installs the onnx extra (README test command): there a missing library is a failure."""
    if os.environ.get("CI"):
        import onnxruntime_genai  # noqa: F401
    else:
        pytest.importorskip("onnxruntime_genai")


def tiny(seed=0):
    """A Llama with 16-wide heads (ONNX Runtime's attention kernel needs a multiple of 16)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=304, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    ort_or_skip()
    from wattlm.engines.ort import OrtModel, build

    folder = tmp_path_factory.mktemp("ort")
    model, tok = tiny(), tiny_bpe_tokenizer()
    engines, infos = {}, {}
    for precision in ("fp32", "int8", "int4"):
        infos[precision] = build(model, tok, folder / precision, precision, threads=2)
        engines[precision] = OrtModel(folder / precision, threads=2, params_total=1)
    yield model, engines, infos
    for engine in engines.values():
        engine.close()


def ids(n=24, seed=1):
    return torch.randint(0, 300, (1, n), generator=torch.Generator().manual_seed(seed))


def test_fp32_logits_and_greedy_tokens_are_transformers(built):
    from wattlm.evaluate.speed import greedy_generate

    model, engines, _ = built
    row = ids(32)
    with torch.no_grad():
        want = model(row).logits[0]
    got = engines["fp32"].window_logits(row[0])
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    prompts = torch.cat([ids(12, seed=2), ids(12, seed=3)])
    out = engines["fp32"].generate_call(prompts, 6)()
    assert out.tolist() == [greedy_generate(model, prompts[i : i + 1], 6)[0].tolist() for i in range(2)]
    assert engines["fp32"].prefill_call(prompts)() == out[:, 0].tolist()


def test_int8_and_int4_stay_close_and_shrink(built):
    model, engines, infos = built
    row = ids(32)
    with torch.no_grad():
        want = torch.log_softmax(model(row).logits[0].double(), -1)
    kls = {}
    for precision in ("int8", "int4"):
        got = torch.log_softmax(engines[precision].window_logits(row[0]).double(), -1)
        kls[precision] = float((want.exp() * (want - got)).sum(-1).mean())
        assert infos[precision]["block_size"] == 32 and infos[precision]["accuracy_level"] == 4
    assert 0 <= kls["int8"] < kls["int4"] < 0.05, kls
    assert infos["int4"]["bytes"] < infos["int8"]["bytes"] < infos["fp32"]["bytes"]
    assert engines["int4"].thread_settings() == {"ort_intra_op_num_threads": 2, "ort_inter_op_num_threads": 1}


def test_token_ids_outside_the_vocabulary_are_refused(built):
    _, engines, _ = built
    with pytest.raises(InvalidInputError, match="outside the model's vocabulary of 304"):
        engines["fp32"].window_logits(torch.tensor([1, 2, 999]))


def test_bench_runs_ort_variants_beside_transformers(tmp_path):
    ort_or_skip()
    from wattlm.bench.config import BenchConfig
    from wattlm.bench.harness import run_bench

    tiny().save_pretrained(tmp_path / "model")
    tiny_bpe_tokenizer().save_pretrained(tmp_path / "model")
    (tmp_path / "text.txt").write_text(BPE_TEXT * 20)
    config = BenchConfig(
        model=str(tmp_path / "model"), text=str(tmp_path / "text.txt"), variants="fp32,ort-fp32,ort-int4",
        seq_len=32, max_tokens=128, min_phase_s=0.02, repeats=1, prompt_len=8, new_tokens=3, kl_windows=2,
        device="cpu", threads=2,
    )  # fmt: skip
    fp32, ort32, ort4 = run_bench(config, out=tmp_path / "run", sources=(ScriptedSource(domain="cpu"),)).records
    assert ort32["engine"] == "ort" and ort32["dtype"] == "onnx:FP32" and ort4["dtype"] == "onnx:INT4"
    assert ort32["ppl"] == pytest.approx(fp32["ppl"], rel=1e-4) and ort32["kl"] < 1e-6  # the same model
    assert ort4["kl"] > ort32["kl"]
    assert ort4["threads"]["ort_intra_op_num_threads"] == 2 == ort4["threads"]["torch_threads"]
    assert ort4["prefill"]["tokens_per_s"] > 0 and ort4["compression"][0]["details"]["block_size"] == 32


def test_without_the_extra_the_variant_says_how_to_install_it(monkeypatch):
    from wattlm.variants import resolve

    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)  # import fails
    variant = resolve("ort-int4")
    with pytest.raises(InvalidInputError, match=r"pip install 'wattlm\[onnx\]'"):
        variant.warnings(torch.device("cpu"))
