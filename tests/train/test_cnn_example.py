import json
import subprocess
import sys
from pathlib import Path

import pytest
import sklearn  # noqa: F401  (a test extra: installed by the README's test command)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cnn_mixed_precision.py"


@pytest.mark.slow
def test_the_small_cnn_trains_in_fp32_and_bf16_with_energy_per_epoch(tmp_path):
    out = tmp_path / "cnn.json"
    r = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "4", "--json", str(out)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    results = {x["precision"]: x for x in json.loads(out.read_text())["results"]}
    assert set(results) == {"fp32", "bf16"}
    for x in results.values():
        assert x["test_accuracy"] > 0.85  # chance is 0.10
        assert len(x["epochs"]) == 4 and all(e["energy_j"] > 0 for e in x["epochs"])
        assert x["epochs"][-1]["loss"] < x["epochs"][0]["loss"]
        assert f"{x['precision']}: test accuracy" in r.stdout
    assert results["bf16"]["epochs"][0]["loss"] != results["fp32"]["epochs"][0]["loss"]  # bf16 did run
