"""The `wattlm` command as a user runs it: a real subprocess, real exit codes, real files."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WATTLM = [sys.executable, "-m", "wattlm"]


def run(*args, **kwargs):
    return subprocess.run([*WATTLM, *args], capture_output=True, text=True, timeout=60, **kwargs)


def test_measure_writes_json_with_estimated_cpu_and_reason(tmp_path):
    out = tmp_path / "m.json"
    r = run("measure", "--json", str(out), "--region", "FR", "--", sys.executable, "-c", "sum(range(3_000_000))")
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["status"] == "ok"
    assert data["cpu_energy_j"] > 0
    cpu = [d for d in data["devices"] if d["domain"] == "cpu"]
    assert cpu and all(d["provenance"] in ("counter", "estimated") for d in cpu)
    estimated = cpu[0]["provenance"] == "estimated"  # a machine without a readable RAPL counter
    # The estimate is said loudly, in the record and on the terminal, exactly when it is used.
    assert any("ESTIMATED" in w for w in data["warnings"]) == estimated
    assert ("ESTIMATED" in r.stderr) == estimated
    assert data["facility"]["carbon"]["region"] == "FR"
    assert "IT energy" in r.stderr


def test_exit_code_is_propagated_and_failure_is_partial(tmp_path):
    out = tmp_path / "m.json"
    r = run("measure", "--json", str(out), "--", sys.executable, "-c", "raise SystemExit(3)")
    assert r.returncode == 3
    data = json.loads(out.read_text())
    assert data["status"] == "partial" and "exited with code 3" in data["reason"]


def test_killed_child_still_writes_partial_json(tmp_path):
    out = tmp_path / "m.json"
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    r = run("measure", "--json", str(out), "--", sys.executable, "-c", code)
    assert r.returncode == 128 + signal.SIGKILL
    data = json.loads(out.read_text())
    assert data["status"] == "partial" and "SIGKILL" in data["reason"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_are_forwarded_to_the_command(tmp_path, sig):
    ready, got = tmp_path / "ready", tmp_path / "got"
    child = (
        "import signal, sys, time, pathlib\n"
        f"def h(s, f):\n    pathlib.Path({str(got)!r}).write_text(str(s)); sys.exit(7)\n"
        "signal.signal(signal.SIGINT, h); signal.signal(signal.SIGTERM, h)\n"
        f"pathlib.Path({str(ready)!r}).write_text('1')\n"
        "while True: time.sleep(0.05)\n"
    )
    out = tmp_path / "m.json"
    proc = subprocess.Popen(
        [*WATTLM, "measure", "--json", str(out), "--", sys.executable, "-c", child],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "child never started"
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    assert got.read_text() == str(int(sig))
    assert proc.returncode == 7
    assert json.loads(out.read_text())["status"] == "partial"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--region", "Atlantis"], "unknown region"),
        (["--pue", "0.8"], "PUE must be"),
        (["--interval", "0"], "--interval must be > 0"),
        (["--interval", "-1"], "--interval must be > 0"),
        (["--cooling", "35,20"], "hot temperature"),
        (["--json", "/nonexistent-dir/m.json"], "does not exist"),
        (["--pue", "abc"], "Invalid value for '--pue'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path, args, message):
    marker = tmp_path / "ran"
    csv_path = tmp_path / "log.csv"
    r = run("measure", *args, "--csv", str(csv_path), "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    assert r.returncode == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists(), "the command must not run on bad input"
    assert not csv_path.exists()


@pytest.mark.parametrize("cmd, message", [([], "no command given"), (["no-such-program-xyz"], "not found on PATH")])
def test_missing_command_is_exit_2(cmd, message):
    r = run("measure", "--", *cmd)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_csv_appends_codecarbon_columns(tmp_path):
    from wattlm.energy.csvlog import COLUMNS

    path = tmp_path / "emissions.csv"
    for _ in range(2):
        assert run("measure", "--csv", str(path), "--region", "DE", "--", sys.executable, "-c", "pass").returncode == 0
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 2
    assert list(rows[0]) == list(COLUMNS)
    assert rows[0]["country_iso_code"] == "DE"
    assert float(rows[0]["energy_consumed"]) > 0  # kWh, as CodeCarbon
    assert float(rows[0]["emissions"]) == pytest.approx(float(rows[0]["energy_consumed"]) * 381 / 1000, rel=1e-6)


def test_foreign_csv_is_refused_untouched(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    r = run("measure", "--csv", str(path), "--", sys.executable, "-c", "pass")
    assert r.returncode == 2 and "other columns" in r.stderr
    assert path.read_text() == "a,b\n1,2\n"


def test_devices_lists_every_source_tried():
    r = run("devices", "--json")
    assert r.returncode == 0, r.stderr
    probes = json.loads(r.stdout)
    assert [p["source"] for p in probes] == ["nvml", "amdsmi", "rapl", "estimate"]
    assert all(p["detail"] for p in probes)


def test_unknown_option_is_one_line_exit_2():
    r = run("measure", "--bogus", "--", "true")
    assert r.returncode == 2 and "No such option" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_existing_json_is_not_overwritten_on_bad_input(tmp_path):
    out = tmp_path / "m.json"
    out.write_text("keep")
    r = run("measure", "--json", str(out), "--region", "nowhere", "--", "true")
    assert r.returncode == 2 and out.read_text() == "keep"


def test_builtin_workload_runs_under_measure():
    r = run("measure", "--", sys.executable, "-m", "wattlm.workload", "--n", "200000")
    assert r.returncode == 0, r.stderr
    assert "summed 200,000 squares" in r.stdout


def test_fetch_offline_with_empty_cache_is_exit_2(tmp_path):
    r = run("fetch", "--offline", env={**os.environ, "WATTLM_CACHE": str(tmp_path)})
    assert r.returncode == 2 and "run once online" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("no_counter, provenance", [("", "counter"), ("1", "integrated")])
def test_measure_with_a_fake_nvidia_gpu(tmp_path, no_counter, provenance):
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root / "tests" / "fakes" / "site"), str(root)]),
        "FAKE_NVML_WATTS": "200",
        "FAKE_NVML_NO_COUNTER": no_counter,
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    devices = json.loads(run("devices", "--json", env=env).stdout)
    assert devices[0]["source"] == "nvml" and devices[0]["available"] and "Fake H100" in devices[0]["detail"]
    out = tmp_path / "m.json"
    r = run("measure", "--json", str(out), "--", sys.executable, "-c", "import time; time.sleep(1.0)", env=env)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    (gpu,) = [d for d in data["devices"] if d["domain"] == "gpu"]
    assert gpu["provenance"] == provenance
    # 200 W for the window's duration (the command plus interpreter start-up), from the fake device.
    assert data["gpu_energy_j"] == pytest.approx(200.0 * data["duration_s"], rel=0.02)
    assert data["gpu_energy_j"] > 150.0
