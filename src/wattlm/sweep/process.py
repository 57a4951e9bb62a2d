"""One server of a sweep: started in a process group of its own on a free loopback port, waited for
until its health URL answers (bounded), stopped with SIGTERM and, after a grace period, SIGKILL —
the whole group, so nothing it started outlives it. Its output goes to a log file; a failure quotes
the log's tail."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ..httpget import get

TAIL_CHARS = 2000


def tail(log: Path, chars: int = TAIL_CHARS) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class ServerProcess:
    def __init__(self, command: list[str], log: Path) -> None:
        self.command, self.log = command, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str | None:
        """None once started; else why it could not be."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            try:
                self.proc = subprocess.Popen(
                    self.command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            except OSError as e:
                return f"could not start {self.command[0]}: {e.strerror or e}"
        return None

    def wait_healthy(self, url: str, timeout_s: float) -> str | None:
        """None once GET url answers 200; else why not (it exited, or the time ran out)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"it exited with code {self.proc.returncode} before answering {url}"
            try:
                if get(url, 2.0)[0] == 200:
                    return None
            except OSError:
                pass
            time.sleep(0.2)
        return f"it did not answer {url} within {timeout_s:g} s"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float) -> str:
        """Stop the process group: SIGTERM, then SIGKILL after `grace_s`. Says how it ended."""
        if self.proc is None:
            return "never started"
        if self.proc.poll() is not None:
            self._kill_group(signal.SIGKILL)  # children it may have left
            return f"had exited with code {self.proc.returncode}"
        self._kill_group(signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
            how = "stopped (SIGTERM)"
        except subprocess.TimeoutExpired:
            self._kill_group(signal.SIGKILL)
            self.proc.wait()
            how = f"killed (SIGKILL after {grace_s:g} s)"
        self._kill_group(signal.SIGKILL)
        return how

    def _kill_group(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
