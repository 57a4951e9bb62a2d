"""The `wattlm` command line: a typer app, one small module per command, each a thin call into
the library (a validated config in, a result out, progress through one callback)."""

from __future__ import annotations

import sys

import typer
from rich.text import Text

from .bench import bench
from .common import err
from .compress import compress
from .devices import devices
from .export import export
from .exporter import exporter
from .fetch import fetch
from .launch import error_message
from .ledger import ledger
from .load import load
from .measure import measure
from .plan import plan_app
from .report import report
from .serve import serve
from .sweep import sweep
from .train import train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure, then cut, the energy of LLM training and inference.",
    pretty_exceptions_enable=False,
)
app.command(context_settings={"allow_interspersed_args": False})(measure)
app.command()(devices)
app.command()(fetch)
app.command()(bench)
app.command()(report)
app.command()(compress)
app.command()(export)
app.command()(train)
app.command()(load)
app.command()(exporter)
app.command()(serve)
app.command()(ledger)
app.command()(sweep)
app.add_typer(plan_app, name="plan")


def main() -> None:
    """Entry point: WattlmError and usage errors become one line on stderr and exit code 2."""
    from ..errors import WattlmError

    try:
        code = app(standalone_mode=False, prog_name="wattlm")
    except WattlmError as e:
        err.print(Text.assemble(("error: ", "bold red"), error_message(e)), soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print(Text("interrupted", "yellow"))
        sys.exit(130)
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
