"""`wattlm bench` end to end on a tiny seeded model: subprocesses, real files, real exit codes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny import save_inputs  # noqa: E402

WATTLM = [sys.executable, "-m", "wattlm"]
FAST = (
    "--seq-len 32 --max-tokens 256 --min-phase-s 0.05 --repeats 2 "
    "--prompt-len 8 --new-tokens 4 --kl-windows 4 --device cpu"
).split()
TEXT = "All the world's a stage, and all the men and women merely players. " * 40


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return save_inputs(tmp_path_factory.mktemp("inputs"), TEXT, seed=7)


def bench(inputs, out, *extra, timeout=120, cmd=WATTLM, env=None):
    args = [*cmd, "bench", "--model", str(inputs / "model"), "--text", str(inputs / "text.txt"), *FAST, *extra]
    if out is not None:
        args += ["--out", str(out)]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def records(run: Path):
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_bench_writes_the_run_and_prints_json(inputs, tmp_path):
    r = bench(inputs, tmp_path / "run", "--variants", "fp32,bf16", "--batch-sizes", "1,2", "--json")
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    stored = records(tmp_path / "run")
    assert printed == stored and [x["variant"] for x in stored] == ["fp32", "bf16"]
    base, bf16 = stored
    for key in (
        "ppl",
        "nll",
        "delta_ppl_pct",
        "kl",
        "prefill",
        "decode",
        "peak_memory_bytes",
        "params_total",
        "params_nonzero",
        "provenance",
    ):
        assert key in bf16
    assert base["baseline"] and base["delta_ppl_pct"] == 0.0 and base["kl"] == 0.0
    assert bf16["kl"] > 0 and bf16["kl_tokens"] == 4 * 31
    assert bf16["delta_ppl_pct"] == pytest.approx(100 * (bf16["ppl"] - base["ppl"]) / base["ppl"])
    assert [d["batch_size"] for d in bf16["decode"]] == [1, 2]
    for phase in [bf16["prefill"], *bf16["decode"]]:
        assert phase["tokens_per_s"] > 0 and phase["provenance"] in ("counter", "integrated", "estimated")
    assert bf16["prefill"]["j_per_token"] > 0
    m = bf16["prefill"]["measurements"][0]
    assert m["schema"] == "wattlm.measurement/1" and m["duration_s"] >= 0.05 and m["work"]["tokens"] % 32 == 0
    assert bf16["params_total"] == base["params_total"] and bf16["model_bytes"] < base["model_bytes"]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (
        info["kind"] == "bench" and info["protocol"]["windows"] == 8 and info["model"]["source_format"] == "safetensors"
    )
    assert info["environment"]["torch"] and info["config"]["variants"] == "fp32,bf16"


@pytest.mark.slow
def test_table_is_the_default_output(inputs, tmp_path):
    r = bench(inputs, tmp_path / "run", "--variants", "fp32")
    assert r.returncode == 0, r.stderr
    assert "fp32 (baseline)" in r.stdout and "J/tok" in r.stdout
    assert f"results: {tmp_path / 'run'}" in r.stderr


@pytest.mark.slow
def test_kill_9_mid_sweep_loses_nothing_finished_and_resume_completes(inputs, tmp_path):
    run = tmp_path / "run"
    args = [
        *WATTLM,
        "bench",
        "--model",
        str(inputs / "model"),
        "--text",
        str(inputs / "text.txt"),
        *FAST,
        "--variants",
        "fp32,bf16,fp16",
        "--min-phase-s",
        "0.6",
        "--out",
        str(run),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = run / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (results.exists() and results.read_text().count("\n") >= 1):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = results.read_text()
    assert first.count("\n") == 1, "the kill came too late to test anything"
    with open(results, "a") as f:
        f.write('{"variant": "bf16", "ppl"')  # a line cut short by the crash
    r = subprocess.run([*WATTLM, "bench", "--resume", str(run), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    whole = records_skipping_fragment(results)
    assert [x["variant"] for x in whole] == ["fp32", "bf16", "fp16"]
    assert results.read_text().startswith(first)  # nothing finished was rewritten
    assert [x["variant"] for x in json.loads(r.stdout)] == ["fp32", "bf16", "fp16"]
    assert whole[1]["kl"] > 0  # the baseline's reference was rebuilt for KL


def records_skipping_fragment(path):
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


@pytest.mark.slow
def test_resume_with_other_options_is_refused(inputs, tmp_path):
    r = bench(inputs, tmp_path / "run", "--variants", "fp32")
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [*WATTLM, "bench", "--resume", str(tmp_path / "run"), "--seq-len", "256"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "(leave out --seq-len)" in r.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("how", ["--nproc", "torchrun"])
def test_two_processes_shard_the_windows(inputs, tmp_path, how):
    single = bench(inputs, tmp_path / "one", "--variants", "fp32,bf16")
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if how == "--nproc":  # torch's launcher API, started by wattlm
        r = bench(inputs, tmp_path / "two", "--variants", "fp32,bf16", "--nproc", "2", timeout=240, env=env)
    else:  # the user's own torchrun
        torchrun = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(_free_port()),
            "-m",
            "wattlm",
        ]
        r = bench(inputs, tmp_path / "two", "--variants", "fp32,bf16", timeout=240, cmd=torchrun, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = records(tmp_path / "one"), records(tmp_path / "two")
    for a, b in zip(one, two, strict=True):
        assert b["ppl"] == pytest.approx(a["ppl"], rel=1e-6)
        assert b["predicted_tokens"] == a["predicted_tokens"] == 8 * 31
    assert two[1]["kl"] == pytest.approx(one[1]["kl"], rel=1e-4)
    assert json.loads((tmp_path / "two" / "run.json").read_text())["protocol"]["world_size"] == 2
    # The CPU is one physical device shared by both ranks: only local rank 0 metered it.
    assert two[0]["eval"]["ranks"] == 2 and len(two[0]["eval"]["measurements"]) == 1


@pytest.mark.slow
def test_gpu_energy_comes_from_the_nvml_counter_when_one_is_there(inputs, tmp_path):
    """The GPU path of the meter in a bench, on CPU: a fake pynvml whose counter advances at 200 W."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root / "tests" / "fakes" / "site"), str(root)]),
        "FAKE_NVML_WATTS": "200",
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    args = [
        *WATTLM,
        "bench",
        "--model",
        str(inputs / "model"),
        "--text",
        str(inputs / "text.txt"),
        *FAST,
        "--variants",
        "fp32",
        "--out",
        str(tmp_path / "run"),
    ]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    (record,) = records(tmp_path / "run")
    for m in record["prefill"]["measurements"]:
        (gpu,) = [d for d in m["devices"] if d["domain"] == "gpu"]
        assert gpu["provenance"] == "counter" and gpu["energy_j"] == pytest.approx(200.0 * m["duration_s"], rel=0.05)
        assert m["it_energy_j"] >= gpu["energy_j"]
    assert record["provenance"] == "estimated"  # the CPU beside the GPU is still estimated here: the worst part decides
    assert "gpu" in record["energy_scope"]


@pytest.mark.slow
@pytest.mark.distributed
def test_bad_input_under_nproc_is_one_line_and_exit_2(inputs, tmp_path):
    r = bench(inputs, tmp_path / "run", "--variants", "fp32", "--seq-len", "200", "--nproc", "2", timeout=240)
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("!")]
    assert (
        r.returncode == 2
        and len(lines) == 1
        and "larger than the model's context" in lines[0]
        and "--seq-len" in lines[0]
    ), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()
