"""`wattlm ledger` refuses bad options with one line and exit code 2, before it listens or writes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.load.servers import free_port


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--otlp", "localhost"], "--otlp"),
        (["--settle-s", "0"], "--settle-s"),
        (["--host-map", "node-a"], "--host-map"),
        (["--work-model", "1,2,3,4"], "--work-model"),
        (["--work-model", "0,1"], "--work-model"),
        (["--energy-from", "127.0.0.1:PORT"], "did not answer"),
        (["--host-map", "node-a=127.0.0.1:9"], "--host-map"),
    ],
)
def test_bad_options_get_one_line_and_exit_2(tmp_path, args, words):
    out = tmp_path / "ledger.jsonl"
    args = [a.replace("PORT", str(free_port())) for a in args]
    p = subprocess.run(
        [sys.executable, "-m", "wattlm", "ledger", "--out", str(out), "--otlp", f"127.0.0.1:{free_port()}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and words in p.stderr, p.stderr
    assert not out.exists()
