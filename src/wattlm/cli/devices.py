"""`wattlm devices`: every energy source wattlm tried, and what it found."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from .common import warn


def devices(as_json: Annotated[bool, typer.Option("--json", help="Print the probes as JSON.")] = False) -> None:
    """List every energy source wattlm tried, what it found and how it measures, or why not."""
    from ..energy.discover import discover

    found = discover()
    if as_json:
        print(json.dumps([p.__dict__ for p in found.probes], indent=2, ensure_ascii=False))
        return
    from ..render import probes_view

    Console().print(probes_view(found.probes))
    for source in found.sources:
        for warning in source.warnings:
            warn(warning)
