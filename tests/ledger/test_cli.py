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


def test_work_model_from_numbers_a_serve_stats_answer_or_fit(tmp_path):
    from wattlm.cli.ledger import _work_model

    stats = tmp_path / "stats.json"
    stats.write_text(
        '{"work_model": {"a_s_per_prompt_token": 0.002, "b_s_per_decode_token": 0.009, "c_s_per_attended": 1e-7}}'
    )
    assert _work_model(str(stats)) == (0.002, 0.009, 1e-7)
    assert _work_model("0.001,0.01") == (0.001, 0.01, 0.0)
    assert _work_model("fit") is None and _work_model(None) is None
