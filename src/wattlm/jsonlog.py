"""Request ledgers (`wattlm serve`'s and `wattlm ledger`'s): one JSON line per record, appended with a
single write() on a file opened for appending, so a killed process leaves only whole lines (the
kernel has each line once the call returns; `close` also fsyncs). A line cut short by a crash
mid-write is cut off when the file is opened again, so the next line starts whole."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        _cut_torn_tail(self.path)
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


def _cut_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        back = min(size, 1 << 20)  # a ledger line is far shorter than this
        f.seek(size - back)
        tail = f.read()
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            f.truncate(size - back + cut + 1 if cut >= 0 else size - back)


def read_ledger(path: str | Path, last_bytes: int | None = None) -> list[dict[str, Any]]:
    """Every whole line of a ledger, or of its last `last_bytes` (a line cut short by a crash, or by
    where the tail begins, is left out). Raises ValueError on a line that is not JSON."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        start = 0 if last_bytes is None else max(0, size - last_bytes)
        f.seek(start)
        data = f.read()
    if start > 0:
        data = data[data.find(b"\n") + 1 :]
    return [json.loads(line) for line in data.splitlines(keepends=True) if line.endswith(b"\n")]
