"""The variant cache: a calibrated llama.cpp variant is built once, found again under the same key,
rebuilt when the model, the variant or the calibration changes; `wattlm serve` serves it, also as
a bench run's recommendation (`--from-report`)."""

from __future__ import annotations

import json
import os

import pytest

from tests.engines.test_export import llama_cpp_or_skip
from tests.report.test_report import ENV, record
from tests.serve.helpers import CHAT
from tests.serve.test_server import post, running
from tests.tiny import tiny_bpe_tokenizer, tiny_llama
from wattlm.errors import ConfigError
from wattlm.models.load import resolve_model
from wattlm.results import RunDir
from wattlm.variants import cache as vc
from wattlm.variants.cache import Calibration, built_gguf

pytestmark = pytest.mark.engines

TEXT = "Now is the winter of our discontent made glorious summer by this sun of York. " * 40


@pytest.fixture
def setup(tmp_path, monkeypatch):
    llama_cpp_or_skip()
    monkeypatch.setenv("WATTLM_CACHE", str(tmp_path / "cache"))
    tokenizer = tiny_bpe_tokenizer()
    tokenizer.chat_template = CHAT
    folder = tmp_path / "model"
    tiny_llama(vocab=len(tokenizer), layers=2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    text = tmp_path / "calib.txt"
    text.write_text(TEXT)
    return folder, Calibration(text=str(text), samples=4, seq_len=16, skip_tokens=0)


def test_a_calibrated_variant_is_built_once_and_rebuilt_when_an_input_changes(setup, monkeypatch):
    folder, calibration = setup
    spec = resolve_model(str(folder))
    path, record_ = built_gguf(spec, "gguf-gptq-q4_0", threads=1, calibration=calibration)
    assert path.is_file() and path.parent.parent == vc.cache_folder()
    assert record_["calibration"]["samples"] == 4 and record_["compression"][-1]["name"] == "gguf-gptq-q4_0"
    assert record_["compression"][-1]["details"]["calibrated"]["calibration_tokens"] == 4 * 16

    def no_build(*a, **k):
        raise AssertionError("rebuilt a cached variant")

    with monkeypatch.context() as m:
        m.setattr(vc, "load_stored", no_build)
        again, _ = built_gguf(spec, "gguf-gptq-q4_0", threads=1, calibration=calibration)
    assert again == path
    other, _ = built_gguf(spec, "gguf-gptq-q4_0", threads=1, calibration=Calibration(calibration.text, 2, 16, 0))
    plain, plain_record = built_gguf(spec, "gguf-q8_0", threads=1, calibration=calibration)
    assert len({path, other, plain}) == 3 and plain_record["calibration"] is None
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    changed, _ = built_gguf(resolve_model(str(folder)), "gguf-gptq-q4_0", threads=1, calibration=calibration)
    assert changed != path  # a changed model file is another model
    assert sorted(p.name for p in vc.cache_folder().iterdir() if p.name.startswith(".")) == []  # nothing half-built
    with pytest.raises(ConfigError, match="does not end in a llama.cpp export"):
        built_gguf(spec, "bf16", threads=1)


def bench_run(folder, model, calibration):
    info = {
        "model": {"name": "tiny", "kind": "dir", "location": str(model), "source_format": "safetensors"},
        "text": {"name": "text.txt"},
        "environment": ENV,
        "protocol": {"windows": 4, "seq_len": 16},
        "config": {
            "prompt_len": 16,
            "new_tokens": 8,
            "calib_text": calibration.text,
            "calib_samples": calibration.samples,
            "seq_len": calibration.seq_len,
            "max_tokens": 64,
        },
    }
    run = RunDir.create(folder, "bench", info)
    run.append(record("fp32", 25.0, 0.0, 0.02, 0.8, baseline=True))
    run.append(record("gguf-gptq-q4_0", 25.2, 0.8, 0.01, 0.3))
    run.append(record("gguf-q4_0", 27.0, 8.0, 0.01, 0.25))  # cheaper, but over the 2 % budget
    return folder


@pytest.mark.slow
def test_serve_from_report_serves_the_recommended_calibrated_variant(setup, tmp_path):
    folder, calibration = setup
    run = bench_run(tmp_path / "bench-run", folder, calibration)
    env = os.environ | {"WATTLM_CACHE": os.environ["WATTLM_CACHE"]}
    with running(None, tmp_path, "--from-report", str(run), env=env) as (url, proc, ledger, log):
        from wattlm.httpget import get

        health = json.loads(get(url + "/health", 5)[1])
        status, _, answer = post(url + "/v1/completions", {"prompt": "Now is", "max_tokens": 5, "ignore_eos": True})
    assert health["source"]["variant"] == "gguf-gptq-q4_0" and health["engine"] == "llamacpp"
    assert health["source"]["calibration"]["samples"] == calibration.samples
    assert status == 200 and answer["usage"]["completion_tokens"] == 5
    assert "serving gguf-gptq-q4_0 (ΔPPL +0.80 %" in log.read_text()


def test_the_key_is_the_files_however_the_model_is_named(setup, tmp_path):
    folder, calibration = setup
    link = tmp_path / "same-model"
    link.symlink_to(folder)
    a, _ = vc.key_of(resolve_model(str(folder)), "gguf-q4_0", None)
    b, _ = vc.key_of(resolve_model(str(link)), "gguf-q4_0", None)
    c, _ = vc.key_of(resolve_model(str(folder)), "gguf-q8_0", None)
    assert a == b != c
