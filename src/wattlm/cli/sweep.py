"""`wattlm sweep --server llama-server --model m.gguf --grid parallel=1,2,4,8 --concurrency 8 ...`: every
configuration of a server started, loaded and metered in rotating rounds; `wattlm report RUN` picks
the lowest-energy one that meets the SLO."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from ..load.config import LoadConfig
from .common import err, refuse_with_resume, warn

D = LoadConfig(url="http://127.0.0.1:8000/v1", concurrencies=(1,))


def sweep(
    ctx: typer.Context,
    server: Annotated[
        Optional[str],
        typer.Option(
            help="A built-in (serve, llama-server, llama-cpp-python; vllm, sglang not yet verified on a GPU) or a"
            " command with {port} and one {placeholder} per grid knob, e.g. 'llama-server -m {model} -np {slots}"
            " --port {port}'."
        ),
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="The model the server loads ({model}).")] = None,
    grid: Annotated[
        Optional[list[str]],
        typer.Option(
            help="A knob and its values, repeatable: --grid parallel=1,2,4,8 --grid threads=1,2 (built-ins: the"
            " server's own option names; gpu_power_limit_w, gpu_clock_mhz: set through NVML)."
        ),
    ] = None,
    default: Annotated[
        Optional[str],
        typer.Option(
            help="A command of your own: its default configuration, e.g. slots=1,threads=2 (the saving's base)."
        ),
    ] = None,
    health: Annotated[
        Optional[str], typer.Option(help="A command of your own: the path that answers 200 when ready.")
    ] = None,
    concurrency: Annotated[
        Optional[str], typer.Option(help="Closed-loop clients, one level per value: 8 or 1,8.")
    ] = None,
    rate: Annotated[Optional[str], typer.Option(help="Open loop: requests per second, one level per value.")] = None,
    requests: Annotated[Optional[int], typer.Option(help="Requests per level (the steady window needs it).")] = None,
    duration: Annotated[float, typer.Option(help="--window fixed: seconds of each level's window.")] = D.duration_s,
    warmup: Annotated[float, typer.Option(help="--window fixed: seconds of load before the window.")] = D.warmup_s,
    window: Annotated[
        str, typer.Option(help="steady (default with --requests): while the batch is full; fixed: warm-up + duration.")
    ] = "auto",
    input_len: Annotated[str, typer.Option(help="Prompt tokens: 128, or a range 64:256.")] = str(D.input_len),
    output_len: Annotated[str, typer.Option(help="Output tokens asked per request.")] = str(D.output_len),
    prompts: Annotated[Optional[Path], typer.Option(help="JSONL of OpenAI messages or ShareGPT conversations.")] = None,
    text: Annotated[Optional[Path], typer.Option(help="A UTF-8 text to draw prompts from.")] = None,
    slo: Annotated[
        Optional[str],
        typer.Option(
            help="The latency the choice must meet, seconds: e.g. itl_p50=0.05,ttft_p90=2 (ttft, itl, tpot, e2e;"
            " p50, p90, p99, mean)."
        ),
    ] = None,
    rounds: Annotated[int, typer.Option(help="Rounds over all configurations, in rotating order.")] = 1,
    startup_timeout: Annotated[float, typer.Option(help="Seconds a server may take to answer its health URL.")] = 300.0,
    grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL when stopping a server.")] = 15.0,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take.")] = D.timeout_s,
    energy_from: Annotated[
        Optional[str], typer.Option(help="Read energy from wattlm exporters instead: URL[,URL...].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the prompts drawn.")] = D.seed,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/sweep-<time>).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Finish an interrupted sweep with its own settings.")] = None,
    offline: Annotated[bool, typer.Option(help="Never download the default prompts' text.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results lines as JSON.")] = False,
) -> None:
    """The lowest-energy server configuration under a latency SLO: start each configuration, run the load,
    stop it, go on; then `wattlm report RUN` for the choice and its saving."""
    from ..errors import InvalidInputError
    from ..load.config import Lengths, parse_levels
    from ..sweep import SweepConfig, parse_grid, parse_slo, run_sweep
    from ..sweep.template import parse_assignments

    config = None
    if resume is not None:
        refuse_with_resume(ctx, ("offline", "as_json"), "give --offline or --json only")
    else:
        if server is None:
            raise InvalidInputError("give the server: --server serve|llama-server|llama-cpp-python, or a command")
        if not grid:
            raise InvalidInputError("give at least one --grid KNOB=V1,V2 (e.g. --grid parallel=1,2,4,8)")
        if (rate is None) == (concurrency is None):
            raise InvalidInputError("give --concurrency C[,C...] or --rate R[,R...], not both")
        if window == "auto":
            window = "steady" if requests is not None and concurrency is not None else "fixed"
        load = LoadConfig(
            url="http://127.0.0.1:1/v1",
            rates=parse_levels(rate, "rates", integer=False) if rate is not None else (),
            concurrencies=parse_levels(concurrency, "concurrencies", integer=True) if concurrency is not None else (),
            duration_s=duration,
            requests=requests,
            warmup_s=warmup,
            window=window,
            input_len=Lengths.parse(input_len, "input_len"),
            output_len=Lengths.parse(output_len, "output_len"),
            prompts=prompts.resolve() if prompts is not None else None,
            text=text.resolve() if text is not None else None,
            timeout_s=timeout,
            energy_from=tuple(u.strip() for u in (energy_from or "").split(",") if u.strip()),
            seed=seed,
        ).to_dict()
        load.pop("url")
        config = SweepConfig(
            server=server,
            grid=parse_grid(grid),
            load=load,
            model=str(Path(model).resolve()) if model and Path(model).exists() else model,
            default=parse_assignments(default, "default") if default else None,
            health=health,
            slo=parse_slo(slo),
            rounds=rounds,
            startup_timeout_s=startup_timeout,
            grace_s=grace,
        )
        out = out or Path("runs") / time.strftime("sweep-%Y%m%d-%H%M%S")

    def shown(config_id: str, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            j = line.get("j_per_output_token")
            itl = line.get("itl_p50_s")
            err.print(
                Text(
                    f"{config_id} round {line['round'] + 1} {line['level']}: {line['status']}"
                    + ("" if j is None else f", {j:.3g} J/token ({line['provenance']})")
                    + ("" if itl is None else f", ITL p50 {itl * 1000:.1f} ms")
                    + ("" if line["status"] == "ok" else f" — {line['reason'][:200]}"),
                    "green" if line["status"] == "ok" else "yellow",
                )
            )

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run_sweep(config, out, resume=resume, offline=offline, on_config=shown)
    finally:
        signal.signal(signal.SIGTERM, previous)
    for note in result.notes:
        warn(note)
    if as_json:
        print(json.dumps(result.lines, indent=2, ensure_ascii=False))
    if any(line.get("provenance") == "estimated" for line in result.lines):
        warn("energy is ESTIMATED (no counter covers this machine's CPU): compare these figures only within this run")
    err.print(Text(f"run: {result.run} — choose with: wattlm report {result.run}", "dim"))
    if result.interrupted:
        warn(f"the sweep was interrupted; finish it with wattlm sweep --resume {result.run}")
        raise typer.Exit(130)


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM: unwind like Ctrl-C, so the running server is stopped and the GPU settings restored."""
    raise KeyboardInterrupt
