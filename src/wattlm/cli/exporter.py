"""`wattlm exporter`: this machine's energy counters over HTTP, in the Prometheus text format."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Optional

import typer
from rich.text import Text

from .common import err, warn


def exporter(
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --expose.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (9464 is the usual Prometheus exporter port).")] = 9464,
    expose: Annotated[
        bool, typer.Option(help="Allow a non-loopback --host: anyone who can reach it reads this machine's power.")
    ] = False,
    interval: Annotated[
        float, typer.Option(help="Sampling interval of power-integrating and estimated sources.")
    ] = 0.5,
    stop_after: Annotated[
        Optional[float], typer.Option(help="Stop after this many seconds (default: run until Ctrl-C or SIGTERM).")
    ] = None,
) -> None:
    """Serve cumulative energy per device (wattlm_energy_joules_total) for wattlm load --energy-from or Prometheus."""
    from ..energy.discover import discover
    from ..energy.exporter import EnergyCollector, is_loopback, serve
    from ..errors import ConfigError

    if not is_loopback(host) and not expose:
        raise ConfigError(
            f"{{host}} {host} is not a loopback address: pass --expose to serve this machine's energy there",
            field="host",
        )
    if not 0 < port < 65536:
        raise ConfigError(f"{{port}} must be 1–65535, got {port}", field="port")
    if not interval > 0 or (stop_after is not None and not stop_after > 0):
        raise ConfigError("{interval} and --stop-after must be > 0 seconds", field="interval")
    sources = discover(interval_s=interval).sources
    collector = EnergyCollector(sources, interval_s=interval)
    try:
        server, thread = serve(collector, host, port)
    except OSError as e:
        collector.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({e.strerror}): choose another {{port}}", field="port"
        ) from e
    if not is_loopback(host):
        warn(f"serving energy readings on {host}:{port}, beyond this machine")
    for s in collector.sources:
        for message in s.warnings:
            warn(message)
    devices = ", ".join(f"{collector.labels[k][0]} ({c.provenance})" for k, c in collector.channels.items())
    err.print(Text(f"serving http://{host}:{port}/metrics: {devices or 'no device'}", "green"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait(stop_after)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        collector.close()
