"""bench --rounds: rotating order, paired ratios with bootstrap intervals, and a recommendation that
does not claim a saving its interval cannot resolve."""

import statistics

import pytest

from tests.fakes.sources import ConstantPower, ScriptedSource
from tests.tiny import tiny_llama, tiny_tokenizer
from wattlm.bench import rounds
from wattlm.bench.config import BenchConfig
from wattlm.bench.harness import run_bench
from wattlm.errors import ConfigError
from wattlm.intervals import bootstrap_median, paired_ratio, rotation
from wattlm.render import bench_view
from wattlm.report.select import recommend

TEXT = "Is this a dagger which I see before me, the handle toward my hand? " * 40


def test_rotation_gives_every_variant_every_place_once_per_cycle():
    items = ["A", "B", "C"]
    orders = [rotation(items, r) for r in range(4)]
    assert orders == [["A", "B", "C"], ["B", "C", "A"], ["C", "A", "B"], ["A", "B", "C"]]
    for place in range(3):
        assert {o[place] for o in orders[:3]} == set(items)
    assert rotation([], 5) == []


def test_a_steady_ratio_is_resolved_and_a_noisy_one_is_not():
    # 8 rounds in which the machine's speed drifts ±40 % but the variant is always 1.5× the baseline (±2 %).
    drift = [1.0, 1.4, 0.6, 1.2, 0.8, 1.3, 0.7, 1.1]
    wobble = [1.00, 1.02, 0.98, 1.01, 0.99, 1.02, 0.98, 1.00]
    base = [100 * d for d in drift]
    fast = [150 * d * w for d, w in zip(drift, wobble, strict=True)]
    steady = paired_ratio(fast, base)
    assert steady.median == pytest.approx(1.5, rel=0.01)
    assert 1.45 < steady.low <= steady.median <= steady.high < 1.55
    assert steady.resolved and steady.rounds == 8
    # Unpaired, the same figures say nothing: the drift is larger than the difference.
    assert statistics.median(base) * 1.5 == pytest.approx(statistics.median(fast), rel=0.05)
    # A variant 3 % faster in the median but within ±10 % noise round to round: not resolved.
    noise = [1.10, 0.92, 1.08, 0.95, 1.12, 0.9, 1.04, 1.01]
    noisy = paired_ratio([100 * d * n for d, n in zip(drift, noise, strict=True)], base)
    assert noisy.low < 1 < noisy.high and not noisy.resolved
    assert noisy.to_dict()["resolved"] is False and noisy.to_dict()["level"] == 0.95


def test_intervals_are_reproducible_and_need_two_rounds():
    values = [1.1, 1.3, 0.9, 1.2, 1.05]
    assert bootstrap_median(values) == bootstrap_median(values)
    one = bootstrap_median([1.2])
    assert one.median == 1.2 and one.low is None and not one.resolved
    assert paired_ratio([None, 2.0], [1.0, 0.0]) is None  # no round with both figures positive
    assert paired_ratio([None, 2.0, 3.0], [1.0, 1.0, 1.0]).rounds == 2  # rounds without a figure are left out
    with pytest.raises(ValueError):
        bootstrap_median([])


def _round(prefill_tps, prefill_jpt, decode_tps, decode_jpt, unresolved=None):
    """One round's phase figures in the form Bench._phases returns them."""
    window = {"it_energy_j": 1.0}
    return {
        "prefill": {
            "tokens_per_s": prefill_tps,
            "j_per_token": prefill_jpt,
            "tokens_per_call": 32,
            "seconds_per_call": 32 / prefill_tps,
            "provenance": "estimated",
            "overhead": 0.01,
            "measurements": [window, window],
        },
        "decode": [
            {
                "batch_size": 1,
                "new_tokens": 4,
                "tokens_per_s": decode_tps,
                "j_per_token": decode_jpt,
                "unresolved": unresolved,
                "ttft_s": 0.1,
                "prompt_j": 1.0,
                "generation_s": 0.2,
                "generation_j": 2.0,
                "method": "m",
                "provenance": "counter",
                "overhead": 0.02,
                "measurements": {"prompt": [window], "generate": [window]},
            }
        ],
    }


def test_rounds_combine_into_medians_and_pair_round_by_round():
    base = rounds.combine([_round(100, 0.01, 10, 0.1), _round(50, 0.02, 5, 0.2), _round(80, 0.0125, 8, 0.125)], 8, 4)
    assert base["prefill"]["tokens_per_s"] == 80 and base["prefill"]["tokens_per_s_range"] == [50, 100]
    assert base["prefill"]["provenance"] == "estimated" and len(base["prefill"]["measurements"]) == 6
    assert base["decode"][0]["j_per_token"] == 0.125 and len(base["decode"][0]["measurements"]["generate"]) == 3
    assert base["query_j_per_round"] == pytest.approx([8 * 0.01 + 4 * 0.1, 8 * 0.02 + 4 * 0.2, 8 * 0.0125 + 0.5])
    # Twice the prefill speed and half its energy in every round; decode the same as the baseline.
    other = rounds.combine(
        [_round(200, 0.005, 10, 0.1), _round(100, 0.01, 5, 0.2), _round(160, 0.00625, 8, 0.125)], 8, 4
    )
    p = rounds.paired(base, other, "fp32")
    assert p["against"] == "fp32" and p["rounds"] == 3
    assert p["prefill"]["tokens_per_s"]["median"] == pytest.approx(2.0)
    assert p["prefill"]["tokens_per_j"]["low"] == pytest.approx(2.0) and p["prefill"]["tokens_per_j"]["resolved"]
    assert p["decode"][0]["tokens_per_j"]["median"] == pytest.approx(1.0)
    assert not p["decode"][0]["tokens_per_j"]["resolved"]
    assert p["query_energy"]["median"] == pytest.approx((0.08 + 0.4) / (0.04 + 0.4))


def test_a_figure_most_rounds_could_not_resolve_stays_unresolved():
    why = "the generations took no longer than their prompt's prefill"
    combined = rounds.combine(
        [_round(100, 0.01, None, None, why), _round(90, 0.01, None, None, why), _round(95, 0.01, 9, 0.1)], 8, 4
    )
    decode = combined["decode"][0]
    assert decode["tokens_per_s"] is None and decode["unresolved"].startswith("unresolved in 2 of 3 rounds: " + why)
    assert combined["query_j_per_round"][:2] == [None, None]


def _row(name, ppl, energy, interval=None, baseline=False):
    return {
        "variant": name,
        "baseline": baseline,
        "status": "ok",
        "delta_ppl_pct": ppl,
        "decode_j_per_token": energy,
        "decode_tokens_per_j_interval": interval,
        "compression": [],
    }


def test_the_recommendation_does_not_claim_an_unresolved_saving():
    unresolved = {"median": 1.10, "low": 0.95, "high": 1.25, "rounds": 8, "resolved": False}
    resolved = {"median": 1.05, "low": 1.02, "high": 1.08, "rounds": 8, "resolved": True}
    rows = [
        _row("fp32", 0.0, 1.0, baseline=True),
        _row("noisy", 0.5, 0.90, unresolved),
        _row("steady", 0.5, 0.95, resolved),
    ]
    rec = recommend(rows, 2.0, "decode_j_per_token")
    assert rec["variant"] == "steady"
    assert rec["saving_pct"] == pytest.approx(100 * (1 - 1 / 1.05))
    assert rec["saving_interval_pct"] == pytest.approx([100 * (1 - 1 / 1.02), 100 * (1 - 1 / 1.08)])
    assert rec["rejected"]["noisy"].startswith("not resolved on this machine: 1.100× the baseline's tokens/J")
    assert "0.950–1.250 over 8 rounds includes 1" in rec["rejected"]["noisy"]
    # Alone, the unresolved variant leaves the baseline recommended: no saving is claimed.
    alone = recommend(rows[:2], 2.0, "decode_j_per_token")
    assert alone["variant"] == "fp32" and alone["saving_pct"] == 0.0 and alone["saving_interval_pct"] is None
    # Without intervals (one round) the figures alone decide, as before.
    plain = recommend([rows[0], _row("noisy", 0.5, 0.90)], 2.0, "decode_j_per_token")
    assert plain["variant"] == "noisy" and plain["saving_pct"] == pytest.approx(10.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs")
    tiny_llama(seed=5).save_pretrained(path / "model")
    tiny_tokenizer().save_pretrained(path / "model")
    (path / "text.txt").write_text(TEXT)
    return path


def _config(folder, **kwargs):
    fast = dict(
        seq_len=32, max_tokens=128, min_phase_s=0.02, repeats=2, prompt_len=8, new_tokens=3, kl_windows=2, device="cpu"
    )
    return BenchConfig(model=str(folder / "model"), text=str(folder / "text.txt"), **(fast | kwargs))


def test_rounds_time_every_variant_in_rotating_order_and_pair_it_with_the_baseline(folder, tmp_path):
    source = ScriptedSource(domain="cpu", provenance="estimated")
    config = _config(folder, variants="fp32,bf16,int8", rounds=3)
    result = run_bench(config, out=tmp_path / "run", sources=(source,))
    fp32, bf16, int8 = result.records
    assert fp32["rounds"]["orders"] == [["fp32", "bf16", "int8"], ["bf16", "int8", "fp32"], ["int8", "fp32", "bf16"]]
    for record in result.records:
        assert record["rounds"]["count"] == 3 and len(record["rounds"]["query_j"]) == 3
        assert len(record["prefill"]["per_round"]["tokens_per_s"]) == 3
        assert len(record["prefill"]["measurements"]) == 3 * 2  # rounds × meter windows
        assert record["prefill"]["tokens_per_s"] == statistics.median(record["prefill"]["per_round"]["tokens_per_s"])
    assert "paired" not in fp32
    for record in (bf16, int8):
        p = record["paired"]
        assert p["against"] == "fp32" and p["rounds"] == 3
        ratios = [
            v / b
            for v, b in zip(
                record["prefill"]["per_round"]["tokens_per_s"],
                fp32["prefill"]["per_round"]["tokens_per_s"],
                strict=True,
            )
        ]
        assert p["prefill"]["tokens_per_s"]["median"] == pytest.approx(statistics.median(ratios))
        assert p["prefill"]["tokens_per_s"]["low"] <= p["prefill"]["tokens_per_s"]["median"]
    # The meter saw the phases in the rotated order: round 2 starts with bf16, round 3 with int8.
    starts = {r["variant"]: [m["start_time"] for m in r["prefill"]["measurements"][::2]] for r in result.records}
    assert starts["bf16"][1] < starts["int8"][1] < starts["fp32"][1]
    assert starts["int8"][2] < starts["fp32"][2] < starts["bf16"][2]
    # Written when the last round ended, one whole record per variant; the table shows the ratios.
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3
    table = bench_view(result.records)
    assert table.columns[-2].header == "×base tok/J" and "3 rounds" in str(table.title)
    assert str(table.columns[-2]._cells[0]) == "baseline"
    assert str(table.columns[-2]._cells[1]).startswith("prefill ")


def test_a_report_of_a_rounds_run_shows_the_intervals(folder, tmp_path):
    from wattlm.report import ReportOptions, write_report

    config = _config(folder, variants="fp32,bf16", rounds=2, repeats=1)
    run_bench(config, out=tmp_path / "run", sources=(ConstantPower(),))  # energy grows with time: J/token > 0
    report = write_report([tmp_path / "run"], ReportOptions(), tmp_path / "report", formats=("md", "json"))
    row = report["runs"][0]["rows"][1]
    assert row["rounds"] == 2 and row["decode_tokens_per_j_interval"]["rounds"] == 2
    md = (tmp_path / "report" / "report.md").read_text()
    assert "decode tok/J ×base" in md and "over 2 rounds run in rotating order" in md


def test_rounds_are_checked_before_any_work(folder):
    with pytest.raises(ConfigError, match="rounds"):
        _config(folder, rounds=0)
