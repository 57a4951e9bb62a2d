"""Failures are results: a broken variant is recorded as failed and the sweep goes on; decode
figures that generation minus prefill cannot resolve are said to be unresolved, never ≤ 0."""

import json
import math
import statistics

import pytest
import torch

from tests.fakes.sources import ScriptedSource
from tests.tiny import tiny_llama, tiny_tokenizer
from wattlm.bench.config import BenchConfig
from wattlm.bench.harness import run_bench
from wattlm.evaluate.speed import Phase, Repetition, decode_figures
from wattlm.render import bench_view

TEXT = "All the world's a stage, and all the men and women merely players. " * 40
FAST = dict(
    seq_len=32, max_tokens=128, min_phase_s=0.02, repeats=1, prompt_len=8, new_tokens=3, kl_windows=2, device="cpu"
)


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory):
    """A tiny model that is fine in fp32 and bf16 and overflows fp16's range (65504) in its MLP: NaN in fp16."""
    folder = tmp_path_factory.mktemp("inputs")
    model = tiny_llama(seed=3)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.mul_(1e7)  # weights beyond fp16 range: inf, then NaN
    model.save_pretrained(folder / "model")
    tiny_tokenizer().save_pretrained(folder / "model")
    (folder / "text.txt").write_text(TEXT)
    return folder


def _bench(folder, out, **kwargs):
    config = BenchConfig(model=str(folder / "model"), text=str(folder / "text.txt"), variants="fp32,fp16,bf16", **FAST)
    return run_bench(config, out=out, sources=(ScriptedSource(domain="cpu", provenance="estimated"),), **kwargs)


def test_a_nan_variant_is_recorded_as_failed_and_the_sweep_goes_on(overflowing, tmp_path):
    result = _bench(overflowing, tmp_path / "run")
    fp32, fp16, bf16 = result.records
    assert fp32["status"] == "ok" and math.isfinite(fp32["ppl"])
    assert fp16["status"] == "failed" and fp16["ppl"] is None and "NaN" in fp16["reason"] and "prefill" not in fp16
    assert bf16["status"] == "ok" and bf16["delta_ppl_pct"] == pytest.approx(
        100 * (bf16["ppl"] - fp32["ppl"]) / fp32["ppl"]
    )
    stored = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in stored] == ["ok", "failed", "ok"]
    table = bench_view(result.records)
    assert str(table.columns[1]._cells[1]) == "failed" and "NaN" in str(table.columns[-1]._cells[1])


def test_resume_keeps_a_failed_variant_unless_asked_to_retry_it(overflowing, tmp_path):
    _bench(overflowing, tmp_path / "run")
    results = tmp_path / "run" / "results.jsonl"
    before = results.read_text()
    again = run_bench(None, resume=tmp_path / "run", sources=(ScriptedSource(domain="cpu"),))
    assert results.read_text() == before and [r["status"] for r in again.records] == ["ok", "failed", "ok"]
    retried = run_bench(None, resume=tmp_path / "run", sources=(ScriptedSource(domain="cpu"),), retry_failed=True)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["variant"] for r in lines] == ["fp32", "fp16", "bf16", "fp16"]  # fp16 ran again (and failed again)
    assert lines[-1]["status"] == "failed" and [r["variant"] for r in retried.records].count("fp16") == 1


def test_the_report_shows_the_failed_variant_and_recommends_among_the_rest(overflowing, tmp_path):
    from wattlm.report import ReportOptions, write_report

    _bench(overflowing, tmp_path / "run")
    report = write_report([tmp_path / "run"], ReportOptions(), tmp_path / "report")
    run = report["runs"][0]
    assert [r["status"] for r in run["rows"]] == ["ok", "failed", "ok"]
    assert "fp16" not in run["pareto"]["decode"] and run["recommendation"]["decode"]["rejected"]["fp16"].startswith(
        "failed: perplexity is NaN"
    )
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| fp16 | failed |" in md


class _Window:
    """What a phase reads of a meter window: its energy and provenance."""

    def __init__(self, energy_j):
        self.it_energy_j, self.provenance = energy_j, "estimated"

    def to_dict(self):
        return {"it_energy_j": self.it_energy_j}


def _phase(name, energies_j, seconds):
    reps = tuple(Repetition(1, s, s, _Window(e)) for e, s in zip(energies_j, seconds, strict=True))
    return Phase(name, 4, reps)


def test_decode_figures_are_generation_minus_prefill_when_that_is_resolvable():
    prompt = _phase("prompt", [1.0, 1.0], [0.1, 0.1])
    generate = _phase("generate", [4.0, 5.0], [0.4, 0.5])
    d = decode_figures(generate, prompt, batch_size=1, new_tokens=4)  # 3 decoded tokens per call
    assert d["j_per_token"] == pytest.approx(((3.0 + 4.0) / 2) / 3) and d["j_per_token_range"] == pytest.approx(
        [1.0, 4 / 3]
    )
    assert d["tokens_per_s"] == pytest.approx(statistics.median([3 / 0.3, 3 / 0.4])) and d["unresolved"] is None


def test_decode_energy_not_above_the_prefill_is_unresolved_not_negative():
    prompt = _phase("prompt", [2.0, 2.0], [0.1, 0.1])
    generate = _phase("generate", [1.5, 2.2], [0.3, 0.3])  # the median window used no more energy than the prefill
    d = decode_figures(generate, prompt, batch_size=1, new_tokens=4)
    assert d["j_per_token"] is None and d["j_per_token_range"] is None
    assert "no more energy than their prompt's prefill" in d["unresolved"] and "--new-tokens" in d["unresolved"]
    assert d["tokens_per_s"] > 0  # the time difference was resolvable
    mixed = decode_figures(_phase("generate", [1.5, 3.0, 3.5], [0.3] * 3), prompt, batch_size=1, new_tokens=4)
    assert (
        mixed["j_per_token"] == pytest.approx(1.0 / 3) and mixed["j_per_token_range"] is None
    )  # one window did not resolve
    record = {
        "variant": "x",
        "status": "ok",
        "ppl": 1.0,
        "delta_ppl_pct": 0.0,
        "kl": 0.0,
        "prefill": {"tokens_per_s": 1.0, "j_per_token": 1.0},
        "decode": [d],
        "provenance": "estimated",
    }
    cells = [str(col._cells[0]) for col in bench_view([record]).columns]
    assert cells[7] == "unresolved"
