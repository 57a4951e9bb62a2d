import json
import os
import subprocess
import sys

import pytest
import torch

from tests.tiny import save_inputs, tiny_llama, tiny_tokenizer  # noqa: E402

WATTLM = [sys.executable, "-m", "wattlm"]
TEXT = "\n\n".join(
    f"Paragraph {i} says hello to the world of number {i * 7 % 13} and more words here." for i in range(300)
)
FAST = ["--steps", "4", "--batch-size", "2", "--seq-len", "64", "--eval-windows", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return save_inputs(tmp_path_factory.mktemp("cli_train"), TEXT)


def train(inputs, *args, timeout=240, env=None):
    cmd = [*WATTLM, "train", "--model", str(inputs / "model"), "--text", str(inputs / "text.txt"), *FAST, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def steps(run):
    return [r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines()) if r["kind"] == "step"]


@pytest.mark.slow
def test_cli_trains_and_prints_the_summary(inputs, tmp_path):
    r = train(inputs, "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "steps 4 (from 0), 512 tokens trained" in r.stdout
    assert "J per trained token" in r.stdout and "held-out perplexity" in r.stdout
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    r = subprocess.run(
        [*WATTLM, "train", "--resume", str(tmp_path / "run"), "--steps", "6"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "steps 6 (from 4)" in r.stdout
    # the report reads train runs: one row per run, the loss / J-per-token figure
    r = subprocess.run(
        [*WATTLM, "report", str(tmp_path / "run"), "--format", "md,json", "--region", "FR"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    summary = json.loads((tmp_path / "run" / "results.jsonl").read_text().splitlines()[-1])
    row = report["runs"][0]["row"]
    assert report["kind"] == "train" and row["what"] == "fp32" and row["steps"] == 6
    assert row["j_per_token"] == summary["j_per_token"] and row["last_loss"] == summary["last_loss"]
    assert row["co2e_g"] == pytest.approx(summary["run_it_energy_j"] / 3.6e6 * report["carbon"]["g_per_kwh"])
    assert [p["step"] for p in report["runs"][0]["series"]] == [1, 2, 3, 4, 5, 6]
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "| run | fp32 | 6 |" in md and "![loss and J/token per step](training.png)" in md
    assert (tmp_path / "run" / "report" / "training.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_with_two_gloo_processes_counts_energy_once(inputs, tmp_path):
    single = train(inputs, "--batch-size", "4", "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr[-2000:]
    two = train(inputs, "--nproc", "2", "--out", str(tmp_path / "two"), env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    one_steps, two_steps = steps(tmp_path / "one"), steps(tmp_path / "two")
    # Two ranks × 2 rows see the rows one process sees at 4: the first loss (before any update)
    # is the same token-weighted mean.
    assert two_steps[0]["loss"] == pytest.approx(one_steps[0]["loss"], rel=1e-5)
    assert two_steps[0]["tokens"] == one_steps[0]["tokens"] == 4 * 64
    assert all(s["ranks"] == 2 for s in two_steps)
    summary = [json.loads(x) for x in (tmp_path / "two" / "results.jsonl").read_text().splitlines()][-1]
    # The CPU is one device shared by both ranks: only local rank 0 metered it.
    metered = [m for m in summary["measurements"] if m["devices"]]
    assert len(summary["measurements"]) == 2 and len(metered) == 1
    assert json.loads((tmp_path / "two" / "run.json").read_text())["data"]["world_size"] == 2


@pytest.mark.slow
@pytest.mark.distributed
def test_local_sgd_averages_exactly_every_h_steps(inputs, tmp_path):
    r = train(
        inputs,
        "--nproc",
        "2",
        "--sync",
        "local-sgd",
        "--sync-every",
        "2",
        "--steps",
        "5",
        "--out",
        str(tmp_path / "ls"),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    records = steps(tmp_path / "ls")
    assert [s["synced"] for s in records] == [False, True, False, True, True]  # every 2 steps and at the end
    for s in records:
        a, b = s["params_digest"]
        assert (a == b) == s["synced"], s  # ranks differ between averages and agree right after one


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_with_two_gloo_processes_trains_and_resumes_exactly(inputs, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = train(inputs, "--batch-size", "4", "--steps", "1", "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr[-2000:]
    full = train(inputs, "--nproc", "2", "--sync", "fsdp", "--steps", "4", "--out", str(tmp_path / "full"), env=env)
    assert full.returncode == 0, full.stderr[-3000:]
    assert steps(tmp_path / "full")[0]["loss"] == pytest.approx(steps(tmp_path / "one")[0]["loss"], rel=1e-5)
    part = train(inputs, "--nproc", "2", "--sync", "fsdp", "--steps", "2", "--out", str(tmp_path / "part"), env=env)
    assert part.returncode == 0, part.stderr[-3000:]
    cmd = [*WATTLM, "train", "--resume", str(tmp_path / "part"), "--steps", "4", "--nproc", "2"]
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    from safetensors.torch import load_file

    a, b = (
        load_file(str(tmp_path / "full" / "model" / "model.safetensors")),
        load_file(str(tmp_path / "part" / "model" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full" / "model")  # gathered whole, loads as a plain model
    assert model.config.num_hidden_layers == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--precision", "fp16"], "fp16 trains with a gradient scaler on CUDA GPUs"),
        (["--precision", "int3"], "--precision 'int3' is not one of fp32, bf16, fp16"),
        (["--nproc", "0"], "--nproc must be at least 1"),
        (["--qat", "int5"], "--qat 'int5' is not int8 or int4-g<G>"),
        (["--student", "half-depth"], "--student builds a student from --teacher"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--dedup", "fuzzy"], "--dedup 'fuzzy' is not one of none, exact, near"),
    ],
)
def test_bad_options_one_line_exit_2_nothing_written(inputs, tmp_path, args, message):
    r = train(inputs, *args, "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.distributed
def test_errors_under_nproc_are_one_line_and_exit_2(inputs, tmp_path):
    r = train(
        inputs, "--nproc", "2", "--precision", "fp16", "--out", str(tmp_path / "a")
    )  # caught before torchrun starts
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --precision fp16 trains with a gradient scaler on CUDA GPUs; on cpu use --precision bf16 (or fp32)"
    ]
    r = train(
        inputs,
        "--nproc",
        "2",
        "--batch-size",
        "400",
        "--out",
        str(tmp_path / "b"),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # found by the ranks
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert (
        r.returncode == 2 and len(errors) == 1 and "fewer than one step needs (400 per rank × 2 ranks)" in errors[0]
    ), r.stderr
    assert "Traceback" not in r.stderr and "ChildFailedError" not in r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_mismatched_vocab_empty_text_and_taken_folder(inputs, tmp_path):
    other = tmp_path / "other"
    tiny_llama(vocab=80).save_pretrained(other)
    tiny_tokenizer(80).save_pretrained(other)
    r = subprocess.run(
        [
            *WATTLM,
            "train",
            "--teacher",
            str(inputs / "model"),
            "--model",
            str(other),
            "--text",
            str(inputs / "text.txt"),
            *FAST,
            "--out",
            str(tmp_path / "kd"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "tokenizers differ" in r.stderr and not (tmp_path / "kd").exists()
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    r = subprocess.run(
        [*WATTLM, "train", "--model", str(inputs / "model"), "--text", str(empty), *FAST, "--out", str(tmp_path / "e")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "has no text" in r.stderr and not (tmp_path / "e").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    r = train(inputs, "--out", str(taken))
    assert r.returncode == 2 and "already exists" in r.stderr and [p.name for p in taken.iterdir()] == ["keep.txt"]
    r = subprocess.run(
        [*WATTLM, "train", "--resume", str(taken), "--lr", "0.1"], capture_output=True, text=True, timeout=60
    )
    assert (
        r.returncode == 2 and "give --steps (to train longer), --offline or --nproc only (leave out --lr)" in r.stderr
    )


def test_hugging_face_trainer_callback_records_steps_epochs_and_summary(tmp_path):
    from transformers import Trainer, TrainingArguments

    from wattlm import WattlmCallback

    model = tiny_llama()
    g = torch.Generator().manual_seed(0)
    data = []
    for _ in range(16):
        ids = torch.randint(1, 96, (32,), generator=g)
        data.append({"input_ids": ids, "labels": ids.clone()})
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        per_device_train_batch_size=4,
        num_train_epochs=2,
        logging_steps=2,
        report_to=[],
        include_num_input_tokens_seen=True,
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=data, callbacks=[WattlmCallback(tmp_path / "run")]).train()
    records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert [s["step"] for s in steps] == list(range(1, 9))
    assert all(s["tokens"] == 4 * 32 and s["energy_j"] >= 0 and s["provenance"] != "none" for s in steps)
    assert [s["loss"] is not None for s in steps] == [False, True] * 4  # logged every 2 steps
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [0, 1] and all(e["tokens"] == 4 * 4 * 32 for e in epochs)
    assert sum(e["energy_j"] for e in epochs) == pytest.approx(sum(s["energy_j"] for s in steps))
    assert records[-1]["kind"] == "summary" and records[-1]["tokens"] == 16 * 2 * 32
    assert json.loads((tmp_path / "run" / "run.json").read_text())["kind"] == "train"
