"""`wattlm compress` and the quantization variants of `wattlm bench`, end to end on a tiny model."""

import json
import subprocess
import sys

import pytest

from tests.tiny import save_inputs  # noqa: E402

WATTLM = [sys.executable, "-m", "wattlm"]
TEXT = "All the world's a stage, and all the men and women merely players. " * 200
FAST = (
    "--seq-len 32 --max-tokens 256 --min-phase-s 0.05 --repeats 1 "
    "--prompt-len 8 --new-tokens 4 --kl-windows 2 --device cpu"
).split()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return save_inputs(tmp_path_factory.mktemp("inputs"), TEXT, seed=3)


def compress(inputs, out, *extra):
    args = [*WATTLM, "compress", "--model", str(inputs / "model"), "--out", str(out), "--device", "cpu", *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_compress_writes_a_folder_that_bench_loads_and_scores(inputs, tmp_path):
    r = compress(
        inputs,
        tmp_path / "q",
        "--technique",
        "gptq",
        "--bits",
        "4",
        "--group-size",
        "16",
        "--calib-text",
        str(inputs / "text.txt"),
        "--calib-samples",
        "4",
        "--seq-len",
        "32",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (
        summary["name"] == "gptq4-g16" and summary["layers"] == 15 and summary["bytes_after"] < summary["bytes_before"]
    )
    assert summary["details"]["calibration"]["samples"] == 4
    b = subprocess.run(
        [
            *WATTLM,
            "bench",
            "--model",
            str(tmp_path / "q"),
            "--text",
            str(inputs / "text.txt"),
            *FAST,
            "--variants",
            "fp32",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert b.returncode == 0, b.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["model"]["kind"] == "compressed" and run["model"]["source_format"] == "wattlm:gptq4-g16"
    assert json.loads(b.stdout)[0]["ppl"] > 1


@pytest.mark.slow
def test_bench_runs_quantization_variants_with_calibration_from_text_it_does_not_score(inputs, tmp_path):
    args = [
        *WATTLM,
        "bench",
        "--model",
        str(inputs / "model"),
        "--text",
        str(inputs / "text.txt"),
        *FAST,
        "--variants",
        "fp32,int8,w8a8-smooth,bf16+int4-g16,gptq4-g16",
        "--calib-samples",
        "4",
        "--out",
        str(tmp_path / "run"),
    ]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["calibration"]["tokens_skipped"] == 256 and run["calibration"]["samples"] == 4
    records = {x["variant"]: x for x in map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())}
    assert records["fp32"]["compression"] == []
    for name in ("int8", "w8a8-smooth", "bf16+int4-g16", "gptq4-g16"):
        (step,) = records[name]["compression"]
        assert step["kernel"]["device"] == "cpu" and "fast" in step["kernel"] and records[name]["ppl"] > 1
    assert records["bf16+int4-g16"]["dtype"] == "bf16"
    assert set(records["w8a8-smooth"]["compression"][0]["details"]["alphas"].values()) <= {0.3, 0.4, 0.5, 0.6, 0.7, 0.8}
    assert records["int8"]["model_bytes"] < records["fp32"]["model_bytes"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, words",
    [
        (["--technique", "int5"], "unknown compression 'int5'"),
        (["--technique", "gptq", "--bits", "5"], "GPTQ bits must be 2, 3, 4 or 8"),
        (["--technique", "int4", "--group-size", "48"], "power of two"),
        (["--technique", "int4", "--group-size", "64"], "does not divide the 32 inputs"),
        (["--technique", "int8", "--group-size", "32"], "--group-size does not apply to int8"),
        (["--technique", "fp8"], "fp8 cannot run on cpu"),
        (["--technique", "w8a8", "--alpha", "0.5"], "alpha only applies with smooth"),
        (["--technique", "int8", "--dtype", "fp64"], "--dtype 'fp64'"),
        (["--technique", "gptq", "--calib-text", "/nonexistent.txt"], "/nonexistent.txt"),
        (["--technique", "prune", "--sparsity", "1.0"], "sparsity must lie in [0, 1)"),
        (["--technique", "wanda-4:2"], "1 ≤ N < M"),
        (["--technique", "int8", "--sparsity", "0.5"], "--sparsity does not apply to int8"),
        (["--technique", "wanda50+int8", "--bits", "4"], "apply to a single technique"),
        (["--technique", "struct25-h4", "--calib-text", "TEXT"], "without a query head"),
        (["--technique", "magnitude50", "--recover-steps", "-1"], "--recover-steps must be ≥ 0"),
    ],
)
def test_bad_compress_options_give_one_line_exit_2_and_write_nothing(inputs, tmp_path, extra, words):
    r = compress(inputs, tmp_path / "q", *[str(inputs / "text.txt") if x == "TEXT" else x for x in extra])
    assert r.returncode == 2 and words in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()  # progress lines may come first; the error is one line, last
    assert (
        lines[-1].startswith("error: ")
        and sum(x.startswith("error") for x in lines) == 1
        and "Traceback" not in r.stderr
    )
    assert not (tmp_path / "q").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_compress_will_not_overwrite_a_folder_or_load_a_missing_model(inputs, tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "x").write_text("mine")
    r = compress(inputs, tmp_path / "q", "--technique", "int8")
    assert r.returncode == 2 and "already exists" in r.stderr and (tmp_path / "q" / "x").read_text() == "mine"
    r = subprocess.run(
        [*WATTLM, "compress", "--model", str(tmp_path / "none"), "--technique", "int8", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "no such file or folder" in r.stderr and not (tmp_path / "o").exists()


def test_bench_refuses_fp8_on_cpu_before_loading_anything(inputs, tmp_path):
    r = subprocess.run(
        [
            *WATTLM,
            "bench",
            "--model",
            str(inputs / "model"),
            "--text",
            str(inputs / "text.txt"),
            *FAST,
            "--variants",
            "fp32,fp8",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "fp8 cannot run on cpu" in r.stderr and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_compress_prunes_into_a_folder_transformers_and_bench_load(inputs, tmp_path):
    r = compress(
        inputs,
        tmp_path / "p",
        "--technique",
        "wanda50+int8",
        "--calib-text",
        str(inputs / "text.txt"),
        "--calib-samples",
        "4",
        "--seq-len",
        "32",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert [s["name"] for s in summary["steps"]] == ["wanda50", "int8"]
    assert summary["steps"][0]["details"]["sparsity"] == 0.5 and summary["params_nonzero"] < summary["params_after"]
    r = compress(
        inputs,
        tmp_path / "s",
        "--technique",
        "struct25",
        "--calib-text",
        str(inputs / "text.txt"),
        "--calib-samples",
        "4",
        "--seq-len",
        "32",
        "--recover-steps",
        "3",
    )
    assert r.returncode == 0, r.stderr
    assert "struct25: " in r.stdout and "recover3: fine-tuned" in r.stdout and "parameters" in r.stdout
    from transformers import AutoModelForCausalLM

    small = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    assert small.config.intermediate_size < 64
    b = subprocess.run(
        [
            *WATTLM,
            "bench",
            "--model",
            str(tmp_path / "s"),
            "--text",
            str(inputs / "text.txt"),
            *FAST,
            "--variants",
            "fp32",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert b.returncode == 0, b.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["model"]["source_format"] == "wattlm:struct25+recover3"


@pytest.mark.slow
def test_bench_runs_pruning_variants_and_reports_zeros_and_the_missing_speed_up(inputs, tmp_path):
    args = [
        *WATTLM,
        "bench",
        "--model",
        str(inputs / "model"),
        "--text",
        str(inputs / "text.txt"),
        *FAST,
        "--variants",
        "fp32,wanda50,sparsegpt-2:4+int8,struct25-layers,share2,magnitude50+recover2",
        "--calib-samples",
        "4",
        "--out",
        str(tmp_path / "run"),
    ]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "wanda50: no speed-up on cpu: unstructured sparsity runs on the dense kernels" in " ".join(r.stderr.split())
    records = {x["variant"]: x for x in map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())}
    fp32, wanda = records["fp32"], records["wanda50"]
    assert wanda["params_total"] == fp32["params_total"] and wanda["params_nonzero"] < 0.8 * fp32["params_nonzero"]
    assert wanda["compression"][0]["kernel"]["fast"] is False and wanda["compression"][0]["details"]["sparsity"] == 0.5
    assert (
        records["struct25-layers"]["params_total"] < fp32["params_total"]
        and records["struct25-layers"]["compression"][0]["kernel"]["fast"]
    )
    assert records["share2"]["params_total"] < fp32["params_total"]
    assert [c["name"] for c in records["magnitude50+recover2"]["compression"]] == ["magnitude50", "recover2"]
    # bench ends by writing the report, whose reasons name the missing sparse kernel
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert (tmp_path / "run" / "report" / "report.html").is_file() and "recommended" in r.stderr
    rejected = report["runs"][0]["recommendation"]["decode"]["rejected"]
    assert "wanda50" in rejected or report["runs"][0]["recommendation"]["decode"]["variant"] == "wanda50"
