"""`wattlm export` end to end: the file it writes loads in llama.cpp; bad input is one line and exit 2."""

import json
import os
import subprocess
import sys

import pytest

from tests.engines.test_export import llama_cpp_or_skip, one_line
from tests.tiny import tiny_bpe_tokenizer, tiny_llama

pytestmark = pytest.mark.engines  # needs the llama.cpp extra

WATTLM = [sys.executable, "-m", "wattlm"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "model"
    tiny_llama(seed=4, vocab=304).save_pretrained(path)
    tiny_bpe_tokenizer().save_pretrained(path)
    return path


def export(*args, env=None):
    return subprocess.run([*WATTLM, "export", *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_export_writes_a_file_llama_cpp_loads_and_never_overwrites(folder, tmp_path):
    llama_cpp_or_skip()
    out = tmp_path / "tiny.gguf"
    r = export("--model", str(folder), "--quant", "q8_0", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["type"] == "q8_0" and info["bytes"] == out.stat().st_size and info["loaded_params"] > 0
    assert info["tokenizer"]["probe_agrees"] and info["source"]["kind"] == "dir"
    before = out.read_bytes()
    r = export("--model", str(folder), "--quant", "q4_0", "--out", str(out))
    assert r.returncode == 2 and one_line(r.stderr) and "already exists" in r.stderr
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]
    r = export(
        "--model", str(out), "--quant", "f16", "--out", str(tmp_path / "again.gguf")
    )  # a GGUF in, its tokenizer copied
    assert r.returncode == 0 and "tokenizer copied from the source GGUF" in r.stdout, r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--quant", "q9_k"], "GGUF type 'q9_k' is not one of"),
        (["--format", "onnx"], "--format 'onnx': only gguf"),
        (["--out-suffix"], "ending in .gguf"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--quant", "q4_0", "--size-budget", "50"], "--size-budget goes with a gptq-* type"),
        (["--quant", "gptq-q4_0", "--calib-text", "/nonexistent.txt"], "--calib-text /nonexistent.txt is not a file"),
    ],
)
def test_bad_options(folder, tmp_path, args, message):
    out = tmp_path / ("x.bin" if args == ["--out-suffix"] else "x.gguf")
    args = [] if args == ["--out-suffix"] else args
    r = export("--model", str(folder), "--out", str(out), *args)
    assert r.returncode == 2 and one_line(r.stderr) and message in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_corrupt_gguf_unknown_architecture_and_missing_engine(folder, tmp_path):
    llama_cpp_or_skip()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    r = export("--model", str(bad), "--out", str(tmp_path / "a.gguf"))
    assert r.returncode == 2 and one_line(r.stderr) and "not a readable GGUF file" in r.stderr, r.stderr
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=304, bos_token_id=0, eos_token_id=0)
    ).save_pretrained(tmp_path / "gpt2")
    tiny_bpe_tokenizer().save_pretrained(tmp_path / "gpt2")
    r = export("--model", str(tmp_path / "gpt2"), "--out", str(tmp_path / "b.gguf"))
    assert r.returncode == 2 and one_line(r.stderr) and "Llama-family" in r.stderr, r.stderr
    shadow = tmp_path / "shadow" / "llama_cpp"  # an environment without the extra
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named llama_cpp')\n")
    env = {**os.environ, "PYTHONPATH": f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = export("--model", str(folder), "--out", str(tmp_path / "c.gguf"), env=env)
    assert r.returncode == 2 and one_line(r.stderr) and "pip install 'wattlm[llamacpp]'" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf", "gpt2", "shadow"]


@pytest.mark.slow
def test_a_calibrated_export_and_a_budget_too_small_for_it(folder, tmp_path):
    from tests.tiny import BPE_TEXT

    llama_cpp_or_skip()
    text = tmp_path / "calib.txt"
    text.write_text(BPE_TEXT * 40)
    common = ["--model", str(folder), "--calib-text", str(text), "--calib-samples", "4", "--seq-len", "32"]
    out = tmp_path / "g.gguf"
    r = export(*common, "--quant", "gptq-iq4_nl", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["type"] == "gptq-iq4_nl" and info["quantizer"] == "wattlm GPTQ onto llama.cpp's blocks"
    assert info["calibration"]["samples"] == 4 and info["calibration"]["calibration_tokens"] == 4 * 32
    r = export(*common, "--quant", "gptq-q4_0", "--size-budget", "0.001", "--out", str(tmp_path / "small.gguf"))
    assert r.returncode == 2 and one_line(r.stderr) and "below the smallest Q4_0 file's weights" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.txt", "g.gguf"]
