"""`wattlm report` on load runs: table, trade-off figure, recommendation under SLOs."""

from __future__ import annotations

import json

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.load.test_run import _config, _run
from wattlm.errors import InvalidInputError
from wattlm.report import ReportOptions, write_report
from wattlm.report.serving import recommend


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load")
    text = tmp / "t.txt"
    text.write_text("words to draw prompts from " * 100)
    with FakeOpenAI(ttft_s=0.01, itl_s=0.005) as server:
        _run(_config(server.url, text, concurrencies=(1, 4), slo={"ttft": 0.5}), tmp / "a")
    with FakeOpenAI(ttft_s=0.01, itl_s=0.02) as server:
        _run(_config(server.url, text, concurrencies=(2,), slo={"ttft": 0.5}), tmp / "b")
    return tmp


def test_load_report_compares_runs_and_recommends_the_cheapest_good_level(runs, tmp_path):
    report = write_report([runs / "a", runs / "b"], ReportOptions(), tmp_path / "rep")
    assert report["kind"] == "load" and [r["label"] for r in report["runs"]] == ["a", "b"]
    rows = [(run["label"], row) for run in report["runs"] for row in run["rows"]]
    best = min(rows, key=lambda x: x[1]["j_per_good_request"])
    assert report["recommendation"]["run"] == best[0] and report["recommendation"]["level"] == best[1]["level"]
    assert best[0] == "a" and best[1]["level"] == "concurrency=4"  # most requests under the same 100 W
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| a | concurrency=4 | ok |" in md and "Recommended: a at concurrency=4" in md
    assert (tmp_path / "rep" / "serving.png").stat().st_size > 1000
    assert "<svg" in (tmp_path / "rep" / "report.html").read_text()
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["recommendation"] == report["recommendation"]


def test_no_recommendation_without_a_level_meeting_the_slos():
    row = {"status": "ok", "j_per_good_request": 1.0, "slo_attainment": 0.5, "level": "rate=1"}
    assert recommend([{"label": "x", "rows": [row]}]) is None
    assert recommend([{"label": "x", "rows": [row | {"slo_attainment": 0.95}]}])["level"] == "rate=1"


def test_runs_of_two_kinds_are_refused(runs, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "run.json").write_text(json.dumps({"schema": "wattlm.run/1", "kind": "train"}))
    with pytest.raises(InvalidInputError, match="report runs of one kind at a time"):
        write_report([runs / "a", tmp_path / "other"], ReportOptions(), tmp_path / "rep")
