"""The facility options (PUE or cooling, carbon, price) that measure, report and plan share."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..energy.facility import Facility

FACILITY = Facility()  # the defaults shown and used: the library's own

Region = Annotated[
    Optional[str], typer.Option(help="Grid region for CO2e, e.g. US, FR, WORLD (the default, stated as such).")
]
Intensity = Annotated[Optional[float], typer.Option(help="Grid carbon intensity, g CO2e/kWh (instead of --region).")]
Pue = Annotated[float, typer.Option(help="Power usage effectiveness ≥ 1; 1.0 = IT energy only.")]
Cooling = Annotated[Optional[str], typer.Option(help="Cooling model instead of PUE: T_COLD,T_HOT[,ETA] in °C.")]
Price = Annotated[Optional[float], typer.Option(help="Electricity price per kWh.")]
Currency = Annotated[str, typer.Option(help="Currency of --price-per-kwh.")]
