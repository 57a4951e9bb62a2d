"""The request ledger: one JSON line per finished request, appended with a single write() on a file
opened for appending, so a killed server leaves only whole lines (the kernel has each line once the
call returns; `close` also fsyncs)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        with self._lock:
            if self._fd is None:
                return
            os.write(self._fd, data)
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None


def read_ledger(path: str | Path) -> list[dict[str, Any]]:
    """Every whole line of a ledger (a last line cut short by a crash is left out)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines(keepends=True):
        if line.endswith("\n"):
            out.append(json.loads(line))
    return out
