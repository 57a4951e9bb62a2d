"""The listening socket of wattlm's servers (`wattlm serve`, `wattlm ledger`): bound before anything
slow starts, so a taken port fails at once with one line."""

from __future__ import annotations

import errno
import socket

from .errors import ConfigError


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
