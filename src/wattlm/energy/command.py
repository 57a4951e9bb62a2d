"""Measure a whole command: `wattlm measure -- CMD ARGS...`.

The command runs as a child process inside one meter window. SIGINT and SIGTERM sent to wattlm are
forwarded to it, and wattlm waits for it to end, so the window always closes: if the command is
killed or fails, the measurement is still returned, with status `partial` and the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidInputError
from .measurement import Measurement
from .meter import EnergyMeter

_FORWARDED = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class CommandResult:
    exit_code: int  # the command's exit code; 128 + N when it was killed by signal N (shell convention)
    measurement: Measurement


def resolve_command(command: Sequence[str]) -> list[str]:
    """Check the command exists before anything is measured or written."""
    if not command:
        raise InvalidInputError("no command given: put it after `--`, e.g. wattlm measure -- python train.py")
    exe = command[0]
    if os.sep in exe:
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            raise InvalidInputError(f"command {exe!r} is not an executable file")
    elif shutil.which(exe) is None:
        raise InvalidInputError(f"command {exe!r} not found on PATH: check its spelling or give its full path")
    return list(command)


def _terminal_delivers_sigint() -> bool:
    """A Ctrl-C typed at the terminal reaches every process of the foreground group, the child
    included: forwarding it again would deliver it twice."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def measure_command(command: Sequence[str], meter: EnergyMeter, name: str = "command") -> CommandResult:
    """Run `command` to completion inside a meter window named `name`."""
    argv = resolve_command(command)
    meter.begin_window(name)
    try:
        child = subprocess.Popen(argv)
    except OSError as e:
        meter.end_window(name)
        raise InvalidInputError(f"could not start {argv[0]!r}: {e.strerror}") from e

    def forward(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and _terminal_delivers_sigint():
            return
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        returncode = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if returncode < 0:
        exit_code = 128 - returncode
        status, reason = "partial", f"command killed by {signal.Signals(-returncode).name}"
    elif returncode != 0:
        exit_code = returncode
        status, reason = "partial", f"command exited with code {returncode}"
    else:
        exit_code, status, reason = 0, None, ""
    return CommandResult(exit_code, meter.end_window(name, status=status, reason=reason))
