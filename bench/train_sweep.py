"""Training on the default model and text; writes bench/results/train_sweep.json.

    python bench/train_sweep.py [--steps 16] [--seq-len 256] [--batch-size 4] [--runs runs/train_sweep] [--only NAMES]

Each row is one `wattlm train` run (a subprocess, as a user would run it) on the embedded
SmolLM2-135M-Instruct and Shakespeare's plays, same data order (seed 0), the same 8 held-out
windows scored before and after:
    fp32          fine-tune, fp32
    bf16          fine-tune, bf16 autocast
    distil-half   a half-depth student (15 of 30 layers, evenly spaced) distilled from the fp32 teacher
                  (extras: the same at lr 5e-4, and with α = 0, i.e. the student trained on the text alone)
    ddp2          fp32, 2 processes × half the batch under torchrun (gloo), vs fp32 in 1 process
    lsgd2-h4      as ddp2 but local SGD: no gradient all-reduce, parameters averaged every 4 steps
                  and at the end (extra, --only), vs ddp2
    qat-int4-g64  QAT at int4-g64, converted at the end; compared with post-training int4-g64 of the
                  fp32 fine-tune (same held-out windows)
J/token is energy of the optimizer steps per trained token; wall time is the process's. On a VM the
energy is ESTIMATED (the JSON says so per row).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def runs(steps: int, seq_len: int, batch: int) -> dict[str, list[str]]:
    common = ["--steps", str(steps), "--seq-len", str(seq_len), "--eval-windows", "8", "--device", "cpu", "--offline"]
    return {
        "fp32": [*common, "--batch-size", str(batch)],
        "bf16": [*common, "--batch-size", str(batch), "--precision", "bf16"],
        "distil-half": [*common, "--batch-size", str(batch), "--teacher", "DEFAULT", "--student", "half-depth"],
        "ddp2": [*common, "--batch-size", str(batch // 2), "--nproc", "2"],
        "lsgd2-h4": [
            *common,
            "--batch-size",
            str(batch // 2),
            "--nproc",
            "2",
            "--sync",
            "local-sgd",
            "--sync-every",
            "4",
        ],
        "qat-int4-g64": [*common, "--batch-size", str(batch), "--qat", "int4-g64"],
        # extras (--only): a higher learning rate for the half-depth student, with and without the teacher
        "distil-half-lr5e-4": [
            *common,
            "--batch-size",
            str(batch),
            "--teacher",
            "DEFAULT",
            "--student",
            "half-depth",
            "--lr",
            "5e-4",
        ],
        "half-ce-lr5e-4": [
            *common,
            "--batch-size",
            str(batch),
            "--teacher",
            "DEFAULT",
            "--student",
            "half-depth",
            "--lr",
            "5e-4",
            "--alpha",
            "0",
        ],
    }


DEFAULT = "fp32,bf16,distil-half,ddp2,qat-int4-g64"


def default_model() -> str:
    from wattlm.models.load import resolve_model

    return resolve_model(None, offline=True).location


def train(name: str, args: list[str], folder: Path) -> dict:
    args = [default_model() if a == "DEFAULT" else a for a in args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if "--nproc" in args else dict(os.environ)
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "wattlm", "train", *args, "--out", str(folder)], capture_output=True, text=True, env=env
    )
    wall_s = time.monotonic() - started
    if r.returncode != 0:
        raise SystemExit(f"{name} failed:\n{r.stderr[-3000:]}")
    records = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    summary = records[-1]
    steps = [x for x in records if x["kind"] == "step"]
    return {
        "variant": name,
        "command": "wattlm train " + " ".join(args),
        "process_wall_s": wall_s,
        "train_wall_s": summary["wall_s"],
        "steps": summary["steps"],
        "tokens": summary["tokens"],
        "energy_j": summary["energy_j"],
        "j_per_token": summary["j_per_token"],
        "tokens_per_s": summary["tokens"] / sum(s["duration_s"] for s in steps),
        "first_loss": summary["first_loss"],
        "last_loss": summary["last_loss"],
        "ppl_before": summary["eval_before"]["ppl"],
        "ppl_after": summary["eval_after"]["ppl"],
        "teacher_ppl": summary["eval_before"].get("teacher_ppl"),
        "ppl_after_convert": (summary.get("eval_after_convert") or {}).get("ppl"),
        "provenance": summary["provenance"],
        "run": str(folder),
    }


def ptq_ppl(fp32_run: Path, scheme: str) -> float:
    """Post-training quantization of the fp32 fine-tune, scored on the run's own held-out windows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from wattlm.compress import compress_
    from wattlm.evaluate.perplexity import Protocol, make_windows
    from wattlm.evaluate.quality import score
    from wattlm.models.corpus import default_corpus
    from wattlm.train.data import prepare
    from wattlm.train.qat import qat_config

    info = json.loads((fp32_run / "run.json").read_text())["config"]
    model = AutoModelForCausalLM.from_pretrained(fp32_run / "model")
    tokenizer = AutoTokenizer.from_pretrained(fp32_run / "model")
    data = prepare(
        default_corpus(offline=True).text,
        tokenizer,
        seq_len=info["seq_len"],
        eval_tokens=info["eval_windows"] * info["seq_len"] + 1,
        train_tokens=info["steps"] * info["batch_size"] * info["seq_len"],
        documents=info["documents"],
        dedup=info["dedup"],
        near_threshold=info["near_threshold"],
        pack_rows=info["pack"],
        seed=info["seed"],
    )
    windows = make_windows(data.eval_ids, Protocol(info["seq_len"], info["eval_windows"] * info["seq_len"]))
    compress_(model.eval(), qat_config(scheme))
    return score(model, windows).result().ppl


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "train_sweep")
    parser.add_argument(
        "--only",
        default=DEFAULT,
        help="comma-separated variants (extras: lsgd2-h4, distil-half-lr5e-4, half-ce-lr5e-4)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_sweep.json")
    args = parser.parse_args()

    plan = runs(args.steps, args.seq_len, args.batch_size)
    names = [n for n in plan if n in args.only.split(",")]
    rows = {}
    for name in names:
        folder = args.runs / name
        if folder.exists():  # a sweep measures fresh runs: an old folder is replaced
            shutil.rmtree(folder)
        print(f"{name}: wattlm train {' '.join(plan[name])}", flush=True)
        rows[name] = train(name, plan[name], folder)
        print(
            json.dumps(
                {k: rows[name][k] for k in ("j_per_token", "last_loss", "ppl_before", "ppl_after", "process_wall_s")}
            ),
            flush=True,
        )

    comparisons = {}
    if "fp32" in rows and "bf16" in rows:
        comparisons["bf16_vs_fp32_j_per_token"] = rows["bf16"]["j_per_token"] / rows["fp32"]["j_per_token"]
    if "fp32" in rows and "ddp2" in rows:
        comparisons["ddp2_vs_1_j_per_token"] = rows["ddp2"]["j_per_token"] / rows["fp32"]["j_per_token"]
        comparisons["ddp2_vs_1_train_wall"] = rows["ddp2"]["train_wall_s"] / rows["fp32"]["train_wall_s"]
    if "ddp2" in rows and "lsgd2-h4" in rows:
        comparisons["lsgd2_h4_vs_ddp2_j_per_token"] = rows["lsgd2-h4"]["j_per_token"] / rows["ddp2"]["j_per_token"]
        comparisons["lsgd2_h4_vs_ddp2_train_wall"] = rows["lsgd2-h4"]["train_wall_s"] / rows["ddp2"]["train_wall_s"]
        comparisons["lsgd2_h4_minus_ddp2_ppl_after"] = rows["lsgd2-h4"]["ppl_after"] - rows["ddp2"]["ppl_after"]
    if "fp32" in rows and "qat-int4-g64" in rows:
        comparisons["ptq_int4_g64_of_fp32_finetune_ppl"] = ptq_ppl(Path(rows["fp32"]["run"]), "int4-g64")
        comparisons["qat_int4_g64_ppl"] = rows["qat-int4-g64"]["ppl_after_convert"]
    import torch

    from wattlm.environment import environment

    result = {
        "what": (
            "wattlm train on the default model (SmolLM2-135M-Instruct, GGUF Q4_1 de-quantized to fp32) and text"
            " (Shakespeare's plays)"
        ),
        "settings": {
            "steps": args.steps,
            "seq_len": args.seq_len,
            "batch_size_global": args.batch_size,
            "lr": 5e-5,
            "eval_windows": 8,
            "seed": 0,
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "environment": environment(torch.device("cpu")),
        },
        "rows": list(rows.values()),
        "comparisons": comparisons,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(comparisons, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
