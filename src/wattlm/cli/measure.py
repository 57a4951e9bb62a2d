"""`wattlm measure -- CMD`: run a command and measure the energy it used."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import err
from .facility import FACILITY, Cooling, Currency, Intensity, Price, Pue, Region


def measure(
    command: Annotated[Optional[list[str]], typer.Argument(help="The command to run, after `--`.")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the measurement as JSON here.")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Append a CodeCarbon-compatible row here.")] = None,
    region: Region = None,
    intensity: Intensity = None,
    pue: Pue = FACILITY.pue,
    cooling: Cooling = None,
    price_per_kwh: Price = None,
    currency: Currency = FACILITY.currency,
    interval: Annotated[float, typer.Option(help="Sampling interval in seconds.")] = 0.1,
    name: Annotated[str, typer.Option(help="Name of the measurement.")] = "command",
) -> None:
    """Run a command and measure the energy it used: wattlm measure -- CMD ARGS..."""
    from ..energy.command import measure_command
    from ..energy.csvlog import append_csv, check_csv
    from ..energy.facility import facility_from_options
    from ..energy.meter import EnergyMeter
    from ..errors import ConfigError
    from ..fileio import atomic_write_text, check_writable
    from ..render import measurement_view

    # Everything the user gave is checked before the command starts or a file is touched;
    # measure_command checks the command itself before it starts the window.
    if not interval > 0:
        raise ConfigError(f"{{interval}} must be > 0 seconds, got {interval}", field="interval", value=interval)
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
