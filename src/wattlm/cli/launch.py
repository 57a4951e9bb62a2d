"""`--nproc N`: a command's processes started through torch's launcher API, with one error line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.text import Text

from .common import err


def error_message(e: Exception) -> str:
    """A library error as the CLI says it: config fields spelled as flags."""
    from ..errors import ConfigError
    from .common import flag

    return e.render(flag) if isinstance(e, ConfigError) else str(e)


def _rank(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """One process: a wattlm error becomes its result (said once by the parent), not a traceback."""
    from ..errors import WattlmError

    try:
        return {"value": fn(*args)}
    except WattlmError as e:
        return {"error": error_message(e)}


def check_nproc(nproc: int) -> None:
    """`--nproc`, checked before any work."""
    from ..errors import ConfigError

    if nproc < 1:
        raise ConfigError(f"{{nproc}} must be at least 1, got {nproc}", field="nproc", value=nproc)


def run_ranks(nproc: int, fn: Callable[..., Any], *args: Any) -> dict[int, Any]:
    """`fn(*args)` in `nproc` processes; each rank's return value. Errors: one line each, exit 2."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from ..ranks import launch_local

    try:
        results = launch_local(nproc, _rank, fn, args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        line = f"process {rank} of {nproc} failed (exit {failure.exitcode}); run with --nproc 1 to see why"
        err.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True)
        raise typer.Exit(2) from None
    errors = list(dict.fromkeys(r["error"] for r in results.values() if "error" in r))
    for line in errors:  # every rank meets the same bad input: said once
        err.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True)
    if errors:
        raise typer.Exit(2)
    return {rank: r["value"] for rank, r in results.items()}
