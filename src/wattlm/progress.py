"""The one progress callback every verb takes: `progress(task, done, total)`.

With counts it reports how far a task is (a progress bar in the CLI); without them it is a
message (a line in the CLI). The library never prints: the CLI decides how to show it.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, task: str, done: int | None = None, total: int | None = None) -> None: ...


def no_progress(task: str, done: int | None = None, total: int | None = None) -> None:
    """The default: progress goes nowhere."""
