"""What every command shares: the stderr console, progress display, option names, --resume checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from ..errors import InvalidInputError

err = Console(stderr=True)

# Config fields whose flag is not `--` + the field with dashes.
FLAG_OF_FIELD = {
    "from_run": "--from",
    "fmt": "--format",
    "as_json": "--json",
    "budget_pct": "--budget-ppl",
    "rates": "--rate",
    "concurrencies": "--concurrency",
    "duration_s": "--duration",
    "warmup_s": "--warmup",
    "timeout_s": "--timeout",
    "interval_s": "--interval",
    "slo_tpot_s": "--slo-tpot",
    "settle_s": "--settle-s",
    "stop_after_s": "--stop-after",
    "max_body_bytes": "--max-body-mb",
}


def flag(field: str) -> str:
    """The command-line flag of a config field: seq_len -> --seq-len."""
    return FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))


def warn(line: str) -> None:
    err.print(Text(f"! {line}", "yellow"))


def absolute(value: Any) -> Any:
    """An existing path made absolute (a resumed run must find it from any folder); anything else as it is."""
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p.resolve()) if p.exists() else str(value)


def typed(ctx: Any, name: str) -> bool:
    """Whether the user gave option `name` (click's parameter source), rather than leaving its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def given_options(ctx: Any, *, except_: tuple[str, ...] = ()) -> list[str]:
    """The flags the user typed, not those left at their defaults."""
    return [
        max(param.opts, key=len) if param.opts else param.name
        for param in ctx.command.params
        if param.name not in except_ and typed(ctx, param.name)
    ]


def refuse_with_resume(ctx: Any, allowed: tuple[str, ...], what: str) -> None:
    """--resume continues a run as it was started: any other option the user typed is an error."""
    extra = given_options(ctx, except_=("resume", *allowed))
    if extra:
        raise InvalidInputError(
            f"--resume continues a run with the options it was started with: {what} (leave out {', '.join(extra)})"
        )


class ProgressView:
    """The one progress callback of the verbs, shown on stderr: rich bars for counted tasks, a dim
    line for messages."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet = quiet
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self.tasks: dict[str, Any] = {}

    def __call__(self, task: str, done: int | None = None, total: int | None = None) -> None:
        if self.quiet:
            return
        if done is None or total is None:
            self.bars.console.print(Text(task, "dim"))
            return
        if not self.tasks:
            self.bars.start()  # on the first counted task: a run that fails before any leaves no blank line
        if task not in self.tasks:
            self.tasks[task] = self.bars.add_task(task, total=total)
        self.bars.update(self.tasks[task], completed=done, total=total)

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.bars.stop()


def quiet_loaders() -> None:
    """transformers' own progress bars would interleave with ours."""
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
