import json

import pytest

from wattlm.errors import InvalidInputError
from wattlm.results import RESULTS_FILE, RUN_FILE, RunDir


def test_create_append_resume(tmp_path):
    run = RunDir.create(tmp_path / "run", "bench", {"model": "tiny", "protocol": {"seq_len": 32}})
    run.append({"variant": "fp32", "ppl": 12.5})
    run.append({"variant": "bf16", "ppl": 12.6})
    again = RunDir.open(tmp_path / "run", kind="bench")
    assert again.info["model"] == "tiny" and again.info["schema"] == "wattlm.run/1"
    assert [r["variant"] for r in again.records()] == ["fp32", "bf16"]
    assert again.finished() == {"fp32", "bf16"}


def test_existing_run_is_never_overwritten(tmp_path):
    RunDir.create(tmp_path / "run", "bench", {"model": "a"})
    before = (tmp_path / "run" / RUN_FILE).read_text()
    with pytest.raises(InvalidInputError, match="continue it with resume"):
        RunDir.create(tmp_path / "run", "bench", {"model": "b"})
    assert (tmp_path / "run" / RUN_FILE).read_text() == before


def test_a_line_cut_by_a_crash_is_skipped_and_reported(tmp_path):
    run = RunDir.create(tmp_path / "run", "bench", {})
    run.append({"variant": "fp32"})
    with open(tmp_path / "run" / RESULTS_FILE, "a") as f:
        f.write('{"variant": "bf1')  # the process died mid-write
    assert RunDir.open(tmp_path / "run").finished() == {"fp32"}
    run.records()
    assert run.skipped_lines == [2]
    run.append({"variant": "bf16"})  # the resumed run's record is not glued to the fragment
    assert run.finished() == {"fp32", "bf16"}
    assert run.skipped_lines == [2]


@pytest.mark.parametrize(
    "content, message",
    [(None, "not a wattlm run"), ("{broken", "corrupt"), (json.dumps({"schema": "other/9"}), "not a wattlm.run/1")],
)
def test_bad_run_directories_are_clear_errors(tmp_path, content, message):
    d = tmp_path / "run"
    d.mkdir()
    if content is not None:
        (d / RUN_FILE).write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        RunDir.open(d)


def test_kind_mismatch(tmp_path):
    RunDir.create(tmp_path / "run", "train", {})
    with pytest.raises(InvalidInputError, match="not a 'bench' run"):
        RunDir.open(tmp_path / "run", kind="bench")


def test_nan_is_refused_rather_than_written_as_invalid_json(tmp_path):
    run = RunDir.create(tmp_path / "run", "bench", {})
    with pytest.raises(ValueError):
        run.append({"variant": "x", "ppl": float("nan")})
    assert run.records() == []


def test_kill_9_while_appending_leaves_only_whole_records(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    RunDir.create(tmp_path / "run", "bench", {})
    code = (
        "import sys; from wattlm.results import RunDir\n"
        f"run = RunDir.open({str(tmp_path / 'run')!r})\n"
        "i = 0\n"
        "while True:\n"
        "    run.append({'variant': f'v{i}', 'payload': 'x' * 5000}); i += 1\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(RunDir.open(tmp_path / "run").records()) < 20:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    run = RunDir.open(tmp_path / "run")
    records = run.records()
    assert len(records) >= 20
    assert all(r["payload"] == "x" * 5000 for r in records)
    assert [r["variant"] for r in records] == [f"v{i}" for i in range(len(records))]
    assert len(run.skipped_lines) <= 1  # at most the line being written when the kill came


def test_newest_record_of_each_unit_in_first_seen_order(tmp_path):
    run = RunDir.create(tmp_path / "r", "load", {})
    for record in ({"level": "c=1", "n": 1}, {"level": "c=2", "n": 2}, {"level": "c=1", "n": 3}, {"other": 0}):
        run.append(record)
    assert run.newest("level") == [{"level": "c=1", "n": 3}, {"level": "c=2", "n": 2}]
