"""What the sweep tests share: a sweep's load settings, and the processes still running with a marker."""

from __future__ import annotations

import psutil

from wattlm.load.config import Lengths, LoadConfig


def load(text, **kw):
    """A sweep's `load` field: steady windows of a few short requests from `text`."""
    base = dict(
        url="http://127.0.0.1:1/v1",
        concurrencies=(2,),
        requests=6,
        window="steady",
        text=text,
        output_len=Lengths(6, 6),
        input_len=Lengths(16, 16),
        timeout_s=10,
    )
    data = LoadConfig(**(base | kw)).to_dict()
    data.pop("url")
    return data


def running(marker: str) -> list[psutil.Process]:
    """Processes whose command line holds `marker` (a server a sweep left running would)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
