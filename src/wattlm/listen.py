"""What wattlm's servers (`wattlm serve`, `wattlm ledger`) share about listening: a free loopback port
for the processes wattlm starts; the socket, bound
before anything slow starts so a taken port fails at once with one line, and the API key — taken
from the option or WATTLM_API_KEY, required off loopback, given by clients as `Authorization: Bearer
KEY`."""

from __future__ import annotations

import errno
import hmac
import os
import socket

from .errors import ConfigError

API_KEY_ENV = "WATTLM_API_KEY"


def free_port() -> int:
    """A port free on loopback now (for a process wattlm starts: a rendezvous, a server of a sweep)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_api_key(api_key: str | None) -> None:
    """A key given empty is a mistake, not "no key"."""
    if api_key is not None and not api_key.strip():
        raise ConfigError("{api_key} is empty: give a secret, or leave it out on loopback", field="api_key")


def resolve_api_key(api_key: str | None) -> str | None:
    """The key in force: the one given, else WATTLM_API_KEY, else none."""
    return api_key or os.environ.get(API_KEY_ENV) or None


def bearer_ok(authorization: str, api_key: str | None) -> bool:
    """Whether an Authorization header carries the key (always, when there is no key); constant time."""
    return api_key is None or hmac.compare_digest(authorization.encode(), f"Bearer {api_key}".encode())


def require_key_off_loopback(host: str, api_key: str | None, field: str, who: str) -> None:
    """A server bound beyond this machine answers only those with the key: refuse to start without one."""
    from .energy.exporter import is_loopback

    if not is_loopback(host) and api_key is None:
        raise ConfigError(
            f"{{{field}}} {host} is not a loopback address: set {{api_key}} (or WATTLM_API_KEY) so that only"
            f" {who} with the key are heard",
            field=field,
        )


def bind(host: str, port: int, field: str = "port") -> socket.socket:
    """A listening socket on host:port; a taken port is a ConfigError naming `field`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
        raise ConfigError(f"{host}:{port} {why}: choose another {{{field}}}", field=field) from e
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
