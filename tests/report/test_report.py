"""`wattlm report`: Pareto front and budget selection on hand-made points, golden Markdown/JSON from a
hand-made run folder, the HTML in headless Chromium, and bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wattlm.energy.facility import Facility, resolve_carbon
from wattlm.errors import InvalidInputError
from wattlm.report import ReportOptions, build_report, write_report
from wattlm.report.select import pareto_front, recommend, stars
from wattlm.results import RunDir

WATTLM = [sys.executable, "-m", "wattlm"]
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("WATTLM_UPDATE_GOLDEN") == "1"  # regenerate: WATTLM_UPDATE_GOLDEN=1 pytest tests/report


def row(name, dppl, energy, baseline=False, kernel=None):
    return {
        "variant": name,
        "delta_ppl_pct": dppl,
        "decode_j_per_token": energy,
        "baseline": baseline,
        "status": "ok",
        "compression": [{"name": name, "kernel": kernel}] if kernel else [],
    }


def test_pareto_front_keeps_non_dominated_points_and_ties():
    points = [
        ("a", 0.0, 1.0),
        ("b", 1.0, 0.5),
        ("c", 1.0, 0.6),
        ("d", 2.0, 0.5),
        ("e", 0.5, 0.5),
        ("f", 0.5, 0.5),
        ("g", 5.0, 0.2),
    ]
    assert pareto_front(points) == ["a", "e", "f", "g"]
    assert pareto_front([("only", 0.0, 1.0)]) == ["only"]
    assert pareto_front([]) == []


def test_recommend_picks_the_lowest_energy_within_budget_and_says_why_for_the_rest():
    rows = [
        row("fp32", 0.0, 1.0, baseline=True),
        row("int8", 0.1, 0.4),
        row("int4", 8.0, 0.2),
        row("bf16", 0.0, 0.6),
        row("wanda50", 1.0, 1.1, kernel={"fast": False, "scheme": "sparse", "note": "dense kernels"}),
        row("w8a8", 0.5, 1.2, kernel={"fast": False, "scheme": "w8a8", "note": "no VNNI"}),
    ]
    rec = recommend(rows, 2.0, "decode_j_per_token")
    assert rec["variant"] == "int8" and rec["saving_pct"] == pytest.approx(60.0)
    why = rec["rejected"]
    assert set(why) == {"fp32", "int4", "bf16", "wanda50", "w8a8"}
    assert why["int4"].startswith("over the quality budget: ΔPPL +8.00 % > 2 %")
    assert why["bf16"].startswith("uses more energy than int8")
    assert "without a sparse kernel" in why["wanda50"] and "no fast kernel on this hardware (no VNNI)" in why["w8a8"]


def test_recommend_ties_empty_budget_and_baseline_only():
    tie = [row("fp32", 0.0, 1.0, baseline=True), row("x", 0.5, 0.5), row("y", 0.2, 0.5), row("z", 0.2, 0.5)]
    assert (
        recommend(tie, 2.0, "decode_j_per_token")["variant"] == "y"
    )  # equal energy: smaller ΔPPL, then the earlier row
    strict = recommend(tie, 0.0, "decode_j_per_token")  # nothing but the baseline is within a 0 % budget
    assert (
        strict["variant"] == "fp32"
        and strict["saving_pct"] == 0.0
        and all("over the quality budget" in w for w in strict["rejected"].values())
    )
    alone = recommend([row("fp32", 0.0, 1.0, baseline=True)], 2.0, "decode_j_per_token")
    assert alone["variant"] == "fp32" and alone["rejected"] == {}
    better_quality = recommend([row("fp32", 0.0, 1.0, baseline=True), row("x", -1.0, 0.9)], 0.0, "decode_j_per_token")
    assert better_quality["variant"] == "x"  # a negative ΔPPL is within any budget


def test_stars_are_on_a_fixed_scale_of_wh_per_1000_queries():
    got = stars({"a": 0.5, "b": 1.0, "c": 3.0, "d": 9.9, "e": 32.0, "f": 500.0})
    assert got == {"a": 5, "b": 4, "c": 4, "d": 3, "e": 1, "f": 1}
    # 18 % apart (fp32 against bf16 on a 2-vCPU VM) no longer spans the whole scale
    assert stars({"fp32": 12.4, "bf16": 10.5}) == {"fp32": 2, "bf16": 2}
    assert stars({"x": None, "y": 0.0}) == {} and stars({}) == {}


# -- a hand-made run folder -------------------------------------------------------------------------

ENV = {"cpu": "Test CPU", "device": "cpu", "torch": "2.13.0", "logical_cpus": 2}


def record(
    name, ppl, dppl, prefill_j, decode_j, baseline=False, provenance="estimated", compression=None, nonzero=None
):
    return {
        "variant": name,
        "status": "ok",
        "baseline": baseline,
        "ppl": ppl,
        "delta_ppl_pct": dppl,
        "kl": 0.0 if baseline else 0.01,
        "top1_agreement": 1.0,
        "prefill": {"j_per_token": prefill_j, "tokens_per_s": 1 / prefill_j, "provenance": provenance},
        "decode": [
            {
                "batch_size": 1,
                "j_per_token": decode_j,
                "tokens_per_s": 10 / decode_j,
                "ttft_s": 0.1,
                "provenance": provenance,
            }
        ],
        "peak_memory_bytes": 2**30,
        "model_bytes": 2**29,
        "params_total": 135_000_000,
        "params_nonzero": nonzero or 134_000_000,
        "compression": compression or [],
    }


def make_run(folder, scale=1.0, provenance="estimated"):
    info = {
        "model": {"name": "tiny", "source_format": "safetensors"},
        "text": {"name": "text.txt"},
        "environment": ENV,
        "protocol": {"windows": 4, "seq_len": 32},
        "config": {"prompt_len": 128, "new_tokens": 32},
    }
    run = RunDir.create(folder, "bench", info)
    sparse = [
        {"name": "wanda50", "kernel": {"scheme": "sparse", "fast": False, "note": "dense kernels"}, "details": {}}
    ]
    for r in (
        record("fp32", 25.0, 0.0, 0.02 * scale, 0.8 * scale, baseline=True, provenance=provenance),
        record("bf16", 25.0, 0.01, 0.015 * scale, 0.7 * scale, provenance=provenance),
        record("int8", 25.1, 0.4, 0.027 * scale, 0.38 * scale, provenance=provenance),
        record("int4-g64", 41.0, 64.0, 0.022 * scale, 0.21 * scale, provenance=provenance),
        record(
            "wanda50",
            55.0,
            120.0,
            0.02 * scale,
            0.81 * scale,
            provenance=provenance,
            compression=sparse,
            nonzero=81_000_000,
        ),
    ):
        run.append(r)
    return folder


def options():
    return ReportOptions(budget_pct=2.0, facility=Facility(pue=1.1, carbon=resolve_carbon("FR"), price_per_kwh=0.2))


def normalised(text, tmp_path):
    return text.replace(str(tmp_path), "<tmp>")


def test_report_markdown_and_json_match_the_golden_files(tmp_path):
    run = make_run(tmp_path / "run-a")
    report = write_report([run], options(), tmp_path / "out", ("md", "json"))
    section = report["runs"][0]
    rec = section["recommendation"]["decode"]
    # By hand from the fixture: int8 is the lowest decode J/token within ΔPPL 2 % (int4 and wanda50 are over it).
    assert rec["variant"] == "int8" and rec["saving_pct"] == pytest.approx(100 * (0.8 - 0.38) / 0.8)
    int8 = next(r for r in section["rows"] if r["variant"] == "int8")
    kwh = 0.38 * 1e6 * 1.1 / 3.6e6  # a million decoded tokens at PUE 1.1
    assert int8["decode_per_million_tokens"]["kwh"] == pytest.approx(kwh)
    assert int8["decode_per_million_tokens"]["cost"] == pytest.approx(kwh * 0.2)
    assert int8["decode_per_million_tokens"]["co2e_g"] == pytest.approx(kwh * resolve_carbon("FR").g_per_kwh)
    # A query is 128 prompt tokens (prefill J/token) and 32 generated ones (decode J/token).
    assert section["wh_per_1000_queries"]["int8"] == pytest.approx(1000 * (128 * 0.027 + 32 * 0.38) / 3600)
    assert section["pareto"]["decode"] == ["fp32", "bf16", "int8", "int4-g64"]
    for name in ("report.md", "report.json"):
        got = normalised((tmp_path / "out" / name).read_text(), tmp_path)
        if UPDATE:
            (GOLDEN / name).write_text(got)
        assert got == (GOLDEN / name).read_text(), f"{name} differs from tests/report/golden/{name}"
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "report.md",
        "report.json",
        "pareto_decode.png",
        "pareto_prefill.png",
        "energy.png",
        "speed.png",
    }


def test_two_runs_are_compared_side_by_side(tmp_path):
    a, b = make_run(tmp_path / "cpu-run"), make_run(tmp_path / "gpu-run", scale=0.1, provenance="counter")
    report = build_report([a, b], options())
    assert [r["label"] for r in report["runs"]] == ["cpu-run (cpu: Test CPU)", "gpu-run (cpu: Test CPU)"]
    write_report([a, b], options(), tmp_path / "cmp", ("md",))
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Side by side" in md and "| int8 | 0.38 (+0.40 %) | 0.038 (+0.40 %) |" in md
    assert "0.038 `counter`" in md and "0.38 `estimated`" in md


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_html_renders_in_headless_chromium_without_console_errors(tmp_path):
    from PIL import Image

    write_report([make_run(tmp_path / "run-a")], options(), tmp_path / "out", ("html",))
    page = tmp_path / "out" / "report.html"
    text = page.read_text()
    # self-contained: nothing fetched (the SVGs' xmlns / RDF identifiers are names, not requests)
    assert not any(
        tag in text for tag in ("<script", "<link", "<img", "<iframe", "src=", "@import", "url(http", "url(//")
    )
    shot = tmp_path / "shot.png"
    r = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=1",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line]
    assert shot.exists(), r.stderr[-2000:]
    assert not console, console
    image = Image.open(shot).convert("L")
    assert len(set(image.tobytes())) > 20  # text, tables and plots, not a blank page


@pytest.mark.parametrize(
    "setup, args, words",
    [
        (lambda p: None, ["MISSING"], "not a wattlm run directory"),
        (lambda p: (p / "bad").mkdir() or (p / "bad" / "run.json").write_text("{not json"), ["bad"], "is corrupt"),
        (lambda p: RunDir.create(p / "empty", "bench", {}), ["empty"], "no finished variant"),
        (lambda p: RunDir.create(p / "train", "train", {}), ["train"], "has no finished training yet"),
        (
            lambda p: RunDir.create(p / "train", "train", {}) and make_run(p / "run"),
            ["run", "train"],
            "report runs of one kind at a time",
        ),
        (lambda p: make_run(p / "run"), ["run", "--format", "pdf"], "--format 'pdf'"),
        (lambda p: make_run(p / "run"), ["run", "--budget-ppl", "two"], "--budget-ppl 'two'"),
        (lambda p: make_run(p / "run"), ["run", "--region", "XX"], "unknown region 'XX'"),
        (
            lambda p: make_run(p / "run") and (p / "mine").mkdir() or (p / "mine" / "notes.txt").write_text("keep"),
            ["run", "--out", "mine"],
            "holds other files",
        ),
    ],
)
def test_bad_report_input_gives_one_line_exit_2_and_writes_nothing(tmp_path, setup, args, words):
    setup(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    r = subprocess.run(
        [
            *WATTLM,
            "report",
            *[str(tmp_path / a) if a in ("MISSING", "bad", "empty", "train", "run", "mine") else a for a in args],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_report_cli_regenerates_in_the_run_folder(tmp_path):
    run = make_run(tmp_path / "run")
    for _ in range(2):  # the second run replaces the first report
        r = subprocess.run(
            [*WATTLM, "report", str(run), "--budget-ppl", "0.5%", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["budget_pct"] == 0.5 and report["runs"][0]["recommendation"]["decode"]["variant"] == "int8"
    assert "recommended" in r.stderr and sorted(p.name for p in (run / "report").iterdir()) == ["report.json"]


def test_options_are_checked():
    with pytest.raises(InvalidInputError, match="≥ 0"):
        ReportOptions(budget_pct=-1)
