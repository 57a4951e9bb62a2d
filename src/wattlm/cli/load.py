"""`wattlm load --url URL --concurrency 1,2,4`: an OpenAI-compatible server under load, metered."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from ..load.config import LoadConfig
from .common import err, refuse_with_resume, warn

D = LoadConfig(url="http://127.0.0.1:8000/v1", concurrencies=(1,))


def load(
    ctx: typer.Context,
    url: Annotated[
        Optional[str], typer.Option(help="The server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1.")
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name (default: the first the server lists).")] = None,
    api: Annotated[str, typer.Option(help="chat (/chat/completions) or completions (/completions).")] = D.api,
    rate: Annotated[
        Optional[str], typer.Option(help="Open loop: requests per second, one level per value, e.g. 0.5,1,2.")
    ] = None,
    concurrency: Annotated[
        Optional[str], typer.Option(help="Closed loop: clients each sending one request at a time, e.g. 1,2,4.")
    ] = None,
    arrival: Annotated[str, typer.Option(help="Arrivals at a rate: poisson (gamma with --burstiness) or constant.")] = (
        D.arrival
    ),
    burstiness: Annotated[float, typer.Option(help="Gamma shape of Poisson arrivals: < 1 burstier.")] = D.burstiness,
    duration: Annotated[float, typer.Option(help="Seconds of each level's measured window.")] = D.duration_s,
    requests: Annotated[Optional[int], typer.Option(help="Measure N requests per level instead of a duration.")] = None,
    warmup: Annotated[float, typer.Option(help="Seconds of load before each measured window.")] = D.warmup_s,
    window: Annotated[
        str,
        typer.Option(
            help="fixed: warm-up, then --duration (or --requests); steady: from the moment the batch is full to the"
            " moment the first client runs out of work (needs --concurrency and --requests)."
        ),
    ] = D.window,
    server_batch: Annotated[
        Optional[int],
        typer.Option(help="--window steady: sequences the server runs at once, when fewer than the clients."),
    ] = None,
    input_len: Annotated[
        str, typer.Option(help="Prompt tokens drawn from the text: 128, or a range 64:256 (approximate).")
    ] = str(D.input_len),
    output_len: Annotated[str, typer.Option(help="Output tokens asked per request: 128, or 64:256.")] = str(
        D.output_len
    ),
    prompts: Annotated[Optional[Path], typer.Option(help="JSONL of OpenAI messages or ShareGPT conversations.")] = None,
    text: Annotated[
        Optional[Path], typer.Option(help="A UTF-8 text to draw prompts from (default: the bundled plays).")
    ] = None,
    turns: Annotated[
        int,
        typer.Option(
            help="User turns per conversation: each resends the history with the model's own answers "
            "(ShareGPT files: their human turns)."
        ),
    ] = D.turns,
    system_prompt_len: Annotated[
        int, typer.Option(help="Tokens of one system prompt every drawn conversation shares (0: none).")
    ] = D.system_prompt_len,
    slo: Annotated[
        Optional[str], typer.Option(help="Goodput SLOs in seconds, e.g. ttft=0.5,tpot=0.05 (also itl, e2e).")
    ] = None,
    idle_s: Annotated[
        float, typer.Option("--idle-s", help="Measure idle power for this long first; energy above idle is shown too.")
    ] = D.idle_s,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take, end to end.")] = D.timeout_s,
    energy_from: Annotated[
        Optional[str],
        typer.Option(help="Read energy from exporters instead: URL[,URL...] (wattlm exporter, dcgm-exporter, Kepler)."),
    ] = None,
    stream: Annotated[bool, typer.Option(help="Stream responses (token arrival times need it).")] = D.stream,
    seed: Annotated[int, typer.Option(help="Seed of prompts, lengths and arrivals.")] = D.seed,
    interval: Annotated[float, typer.Option(help="Energy sampling interval in seconds.")] = D.interval_s,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/load-<time>).")] = None,
    resume: Annotated[
        Optional[Path], typer.Option(help="Continue this run: levels recorded ok are kept, the others rerun.")
    ] = None,
    offline: Annotated[bool, typer.Option(help="Never download the bundled text.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the level records as JSON on stdout.")] = False,
) -> None:
    """Drive an OpenAI-compatible server at given rates or concurrencies; measure energy per request and token."""
    from ..errors import InvalidInputError
    from ..load.config import Lengths, parse_levels, parse_slo
    from ..load.runner import run_load

    if resume is not None:
        refuse_with_resume(ctx, ("offline", "as_json"), "give --offline or --json only")
        config = None
    else:
        if url is None:
            raise InvalidInputError("give the server with --url, e.g. --url http://127.0.0.1:8000/v1")
        if (rate is None) == (concurrency is None):
            raise InvalidInputError("give --rate R[,R...] or --concurrency C[,C...] (one level per value), not both")
        config = LoadConfig(
            url=url,
            model=model,
            api=api,
            rates=parse_levels(rate, "rates", integer=False) if rate is not None else (),
            concurrencies=parse_levels(concurrency, "concurrencies", integer=True) if concurrency is not None else (),
            arrival=arrival,
            burstiness=burstiness,
            duration_s=duration,
            requests=requests,
            warmup_s=warmup,
            window=window,
            server_batch=server_batch,
            input_len=Lengths.parse(input_len, "input_len"),
            output_len=Lengths.parse(output_len, "output_len"),
            prompts=prompts.resolve() if prompts is not None else None,
            text=text.resolve() if text is not None else None,
            turns=turns,
            system_prompt_len=system_prompt_len,
            slo=parse_slo(slo),
            idle_s=idle_s,
            timeout_s=timeout,
            energy_from=tuple(u.strip() for u in (energy_from or "").split(",") if u.strip()),
            stream=stream,
            seed=seed,
            interval_s=interval,
        )
        out = out or Path("runs") / time.strftime("load-%Y%m%d-%H%M%S")
    view = LiveView()
    with view:
        result = run_load(
            config,
            out,
            resume=resume,
            offline=offline,
            on_level=view.level_done,
            on_tick=view.tick,
        )
    from ..results import RunDir

    records = RunDir.open(result.run).newest("level")  # a level run again counts by its newest record
    if as_json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        from ..render import load_view

        Console(width=None if sys.stdout.isatty() else 200).print(load_view(records))
    for r in records:
        if r.get("generator"):
            err.print(Text(f"{r['level']}: {r['generator']['how']}", "dim"))
            break
    if any(r.get("provenance") == "estimated" for r in records):
        warn("energy is ESTIMATED (no counter covers this machine's CPU): compare these figures only within this run")
    err.print(Text(f"run: {result.run}", "dim"))
    if result.stopped:
        warn(f"the run stopped early: {result.stopped}; continue it with wattlm load --resume {result.run}")
        raise typer.Exit(130 if result.interrupted else 1)


class LiveView:
    """level · phase · in flight · tok/s · W, refreshed twice a second on stderr."""

    def __init__(self) -> None:
        from rich.live import Live

        self.live = Live(Text(""), console=err, transient=True, refresh_per_second=4)
        self.power_w: float | None = None

    def __enter__(self) -> LiveView:
        if err.is_terminal:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def tick(self, state: dict[str, Any]) -> None:
        power = state.get("power_w")
        line = (
            f"level {state['level'] + 1} · {state['phase']} · {state['in_flight']} in flight · "
            f"{state['tokens_per_s']} tok/s · {state['done']} done" + (f" · {power:.0f} W" if power is not None else "")
        )
        self.live.update(Text(line, "cyan"))

    def level_done(self, record: dict[str, Any]) -> None:
        j = record.get("j_per_output_token")
        err.print(
            Text(
                f"{record['level']}: {record['status']}, {record['requests_completed']}/{record['requests_sent']} "
                f"requests, {record['output_tokens_per_s']:.4g} tok/s"
                + ("" if j is None else f", {j:.3g} J/token ({record['provenance']})"),
                "green" if record["status"] == "ok" else "yellow",
            )
        )
