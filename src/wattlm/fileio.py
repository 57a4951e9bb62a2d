"""Atomic writes and whole-line appends, so a crash never leaves half a file behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, InvalidInputError


def check_writable(path: str | Path, what: str) -> Path:
    """Fail before any work starts if `path` cannot be written."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise InvalidInputError(f"{what} {p} is a directory: give a file name")
    if not parent.is_dir():
        raise InvalidInputError(f"{what} {p}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise InvalidInputError(f"{what} {p} is not writable; choose another path")
    return p


def check_new_folder(path: Path, if_taken: str) -> None:
    """Fail before any work if folder `path` exists with content or cannot be created; `if_taken`
    says what to do instead (e.g. resume it), naming fields as {field} (see ConfigError)."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{path} already exists and is not an empty folder: {if_taken}", field="out")
    parent = path.resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{{out}} {path}: {parent} is not a writable folder; choose another {{out}}", field="out")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_lines(path: str | Path, lines: list[str]) -> None:
    """Append whole lines with one write, so concurrent appenders do not interleave halves."""
    data = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `folder`; on success it replaces `folder` (which the caller
    has checked may go) with normal permissions, on any error it is removed: never half written."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is for reading
        for path in tmp.iterdir():
            os.chmod(path, 0o666 & ~umask)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
