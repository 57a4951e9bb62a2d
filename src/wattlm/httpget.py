"""A plain HTTP GET for the few reads outside the load itself (an exporter's metrics, a server's
model list and version). The standard library is enough for those; the load's streamed requests
go through aiohttp (wattlm/load/client.py)."""

from __future__ import annotations

import urllib.error
import urllib.request


def get(url: str, timeout_s: float) -> tuple[int, str]:
    """(HTTP status, body text). Raises OSError when the server cannot be reached or times out."""
    request = urllib.request.Request(url, headers={"Accept": "text/plain, application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (the URL the user gave)
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:  # an answer, just not a 200
        return e.code, e.read().decode("utf-8", errors="replace")
