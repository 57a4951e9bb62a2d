"""`wattlm bench` with llama.cpp variants, end to end on a tiny seeded model with a byte-level BPE tokenizer."""

import json
import subprocess
import sys

import pytest

from tests.engines.test_export import llama_cpp_or_skip, one_line
from tests.tiny import BPE_TEXT, tiny_bpe_tokenizer, tiny_llama

pytestmark = pytest.mark.engines  # needs the llama.cpp extra

WATTLM = [sys.executable, "-m", "wattlm"]
FAST = (
    "--seq-len 32 --max-tokens 256 --min-phase-s 0.05 --repeats 2 "
    "--prompt-len 8 --new-tokens 4 --kl-windows 4 --device cpu"
).split()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("engine-inputs")
    tiny_llama(seed=3, vocab=304).save_pretrained(folder / "model")
    tiny_bpe_tokenizer().save_pretrained(folder / "model")
    (folder / "text.txt").write_text(BPE_TEXT * 10, encoding="utf-8")
    return folder


def bench(model, text, out, *extra):
    args = [*WATTLM, "bench", "--model", str(model), "--text", str(text), *FAST, *extra, "--out", str(out)]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def records(run):
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_gguf_variants_score_the_same_tokens_and_report_their_engine(inputs, tmp_path):
    llama_cpp_or_skip()
    r = bench(
        inputs / "model",
        inputs / "text.txt",
        tmp_path / "run",
        "--variants",
        "fp32,gguf-f32,struct25+gguf-q8_0",
        "--batch-sizes",
        "1,2",
    )
    assert r.returncode == 0, r.stderr
    fp32, f32, pruned = records(tmp_path / "run")
    assert [x["engine"] for x in (fp32, f32, pruned)] == ["hf", "llamacpp", "llamacpp"]
    assert [x["dtype"] for x in (fp32, f32, pruned)] == ["fp32", "gguf:F32", "gguf:Q8_0"]
    assert f32["ppl"] == pytest.approx(fp32["ppl"], rel=1e-4) and f32["kl"] < 1e-6 and f32["top1_agreement"] == 1.0
    assert f32["predicted_tokens"] == fp32["predicted_tokens"]
    # every runtime's thread settings are recorded, and equal across engines
    assert f32["threads"]["n_threads"] == f32["threads"]["n_threads_batch"] == fp32["threads"]["torch_threads"] >= 1
    assert "n_threads" not in fp32["threads"] and "omp_wait_policy" in fp32["threads"]
    assert (
        pruned["kl"] > 100 * max(f32["kl"], 1e-9)
        and pruned["params_total"] < f32["params_total"] == fp32["params_total"]
    )
    assert [c["name"] for c in pruned["compression"]] == ["struct25", "gguf-q8_0"]
    export = pruned["compression"][-1]["details"]
    assert export["type"] == "q8_0" and export["tokenizer"]["probe_agrees"] and export["quantizer"]
    for phase in [f32["prefill"], *f32["decode"]]:
        assert phase["tokens_per_s"] > 0 and phase["j_per_token"] is not None
    assert [d["batch_size"] for d in f32["decode"]] == [1, 2]
    report = subprocess.run(
        [*WATTLM, "report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {"gguf-f32", "struct25+gguf-q8_0"} <= {row["variant"] for row in data["runs"][0]["rows"]}


@pytest.mark.slow
def test_engine_option_and_gguf_source(inputs, tmp_path):
    llama_cpp_or_skip()
    from transformers import AutoModelForCausalLM

    from wattlm.engines.export import export_gguf

    model = AutoModelForCausalLM.from_pretrained(inputs / "model")
    export_gguf(model, tiny_bpe_tokenizer(), tmp_path / "tiny.gguf", "f32", name="tiny", threads=1)
    r = bench(
        tmp_path / "tiny.gguf",
        inputs / "text.txt",
        tmp_path / "run",
        "--variants",
        "fp32,gguf-source",
        "--engine",
        "llamacpp:q8_0",
        "--threads",
        "1",
    )
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (
        info["config"]["threads"] == 1
        and info["environment"]["torch_threads"] == 1
        and info["environment"]["llama_cpp_python"]
    )
    base, source = records(tmp_path / "run")
    assert base["variant"] == "fp32+gguf-q8_0" and source["variant"] == "gguf-source" and source["dtype"] == "gguf:F32"
    assert source["compression"][0]["details"]["type"] == "gguf:F32" and source["params_total"] == base["params_total"]
    assert 0 <= source["kl"] < 5e-3 and source["top1_agreement"] > 0.9  # the F32 file against its own Q8_0 export
    assert base["compression"][-1]["details"]["tokenizer"]["from"] == str(
        tmp_path / "tiny.gguf"
    )  # copied from the source file


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--variants", "fp32,gguf-source"], "is not one; use gguf-<type>"),
        (["--variants", "fp32,gguf-q9_9"], "unknown variant step 'gguf-q9_9'"),
        (["--variants", "gguf-q8_0+int8"], "must be the last one"),
        (["--variants", "fp32,int8+gguf-source"], "cannot follow other steps"),
        (["--engine", "vllm"], "--engine 'vllm': use hf, llamacpp"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_engine_variants_are_one_line_errors(inputs, tmp_path, args, message):
    llama_cpp_or_skip()
    r = bench(inputs / "model", inputs / "text.txt", tmp_path / "run", *args)
    assert r.returncode == 2 and one_line(r.stderr) and message in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()
