"""Two `wattlm exporter` processes as two "nodes" (fake NVML GPUs, one UUID shared), read by
`wattlm load --energy-from`; and a real Prometheus scraping an exporter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.load.servers import free_port, wait_until_serving
from wattlm.httpget import get

ROOT = Path(__file__).resolve().parents[2]
WATTLM = [sys.executable, "-m", "wattlm"]
pytestmark = pytest.mark.slow


def start_exporter(port: int, uuids: str, watts: float) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "fakes" / "site"), str(ROOT)]),
        "FAKE_NVML_UUIDS": uuids,
        "FAKE_NVML_WATTS": str(watts),
    }
    p = subprocess.Popen(
        [*WATTLM, "exporter", "--port", str(port), "--stop-after", "120"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    why = wait_until_serving(f"http://127.0.0.1:{port}/metrics", p, 60.0)
    if why is not None:
        p.kill()
        raise AssertionError(f"the exporter on {port} did not start: {why}")
    return p


@pytest.fixture
def nodes():
    ports = [free_port(), free_port()]
    procs = [
        start_exporter(ports[0], "GPU-node-a,GPU-shared", 100.0),
        start_exporter(ports[1], "GPU-node-b,GPU-shared", 100.0),
    ]
    yield ports
    for p in procs:
        p.terminate()
        p.wait(timeout=30)


def test_energy_from_two_exporters_sums_nodes_and_counts_a_shared_gpu_once(nodes, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("some words to draw prompts from " * 40)
    urls = ",".join(f"127.0.0.1:{p}" for p in nodes)
    with FakeOpenAI(itl_s=0.005) as server:
        r = subprocess.run(
            [*WATTLM, "load", "--url", server.url, "--concurrency", "2", "--duration", "2", "--warmup", "0.3"]
            + ["--text", str(text), "--energy-from", urls, "--out", str(tmp_path / "run"), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 0, r.stderr
    (level,) = json.loads(r.stdout)
    assert level["status"] == "ok", level["reason"]
    gpus = [d for d in level["measurement"]["devices"] if d["domain"] == "gpu"]
    assert sorted(d["key"] for d in gpus) == ["remote:GPU-node-a", "remote:GPU-node-b", "remote:GPU-shared"]
    assert all(d["provenance"] == "counter" for d in gpus)
    # three distinct GPUs at 100 W each for the window
    assert level["measurement"]["gpu_energy_j"] == pytest.approx(300.0 * level["duration_s"], rel=0.15)
    # both "nodes" run on this machine: its CPU and DRAM (same machine id) are counted once
    assert sum(1 for d in level["measurement"]["devices"] if d["domain"] == "cpu") == 1
    assert level["generator"]["energy_j"] == 0.0 and "exporters" in level["generator"]["how"]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["energy"]["from"] == urls.split(",")


def test_exporter_refuses_a_public_address_without_expose():
    r = subprocess.run([*WATTLM, "exporter", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--expose" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="Prometheus is not installed (apt-get install prometheus)"
)
def test_prometheus_scrapes_the_exporter(tmp_path):
    port, prom_port = free_port(), free_port()
    exporter = start_exporter(port, "GPU-prom", 50.0)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wattlm\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        query = f'http://127.0.0.1:{prom_port}/api/v1/query?query=wattlm_energy_joules_total{{uuid="GPU-prom"}}'
        deadline, result = time.monotonic() + 90, []
        while time.monotonic() < deadline and not result:
            time.sleep(1.0)
            try:
                result = json.loads(get(query, 2.0)[1])["data"]["result"]
            except (OSError, ValueError, KeyError):
                result = []
        assert result, "Prometheus never returned the counter"
        assert result[0]["metric"]["provenance"] == "counter" and float(result[0]["value"][1]) > 0
    finally:
        prom.terminate()
        exporter.terminate()
        prom.wait(timeout=30)
        exporter.wait(timeout=30)
