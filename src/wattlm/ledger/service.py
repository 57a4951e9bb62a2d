"""Running `wattlm ledger`: checks before anything listens, the receiver on uvicorn, a settling thread,
and on SIGTERM or Ctrl-C a last settle up to the last energy reading before the ledger closes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from ..attribution.work import WorkModel
from ..errors import ConfigError
from ..fileio import check_writable
from ..jsonlog import Ledger, read_ledger
from ..listen import bind, require_key_off_loopback
from .app import create_app
from .config import LedgerConfig
from .hosts import build
from .metrics import LedgerMetrics
from .settle import SeenIds, Settler

log = logging.getLogger("wattlm.ledger")
TICK_S = 1.0  # how often intervals are settled


def check(config: LedgerConfig) -> None:
    require_key_off_loopback(config.host, config.resolved_api_key(), "otlp", "senders")
    check_writable(config.out, "ledger")
    from .otlp import check_available

    check_available()


TAIL_BYTES = 64 << 20  # a restart reads the ids of this much of the ledger's end


def seen_ids(path: str) -> SeenIds:
    """Ids already at the end of a ledger: a restart continues it without writing them again."""
    try:
        lines = read_ledger(path, last_bytes=TAIL_BYTES)
    except FileNotFoundError:
        return SeenIds()
    except ValueError as e:  # not JSON, or not UTF-8
        raise ConfigError(f"{{out}} {path} is not a ledger ({e}): choose another file", field="out") from e
    return SeenIds(
        [str(r["id"]) for r in lines if isinstance(r, dict) and r.get("kind") == "request" and r.get("id") is not None]
    )


def run(config: LedgerConfig, *, on_ready: Callable[[Any], None] = lambda info: None) -> int:
    """Receive and settle until SIGTERM, Ctrl-C or `stop_after_s`; returns the exit code (0)."""

    check(config)
    seen = seen_ids(config.out)
    sock = bind(config.host, config.port, field="otlp")
    hosts = build(config.energy_from, config.host_map, config.interval_s)
    forwarder = None
    try:
        if config.forward:
            from .forward import Forwarder

            forwarder = Forwarder(config.forward)
        metrics = LedgerMetrics(config.group_by)
        ledger = Ledger(config.out)
        hosts.start()

        def on_request(line: dict[str, Any]) -> None:
            metrics.request(line)
            if forwarder is not None:
                forwarder.request(line)

        model = WorkModel.given(*config.work_model) if config.work_model else None
        settler = Settler(
            hosts,
            ledger,
            seen,
            settle_s=config.settle_s,
            model=model,
            fit=config.fit_work_model,
            on_request=on_request,
            on_interval=metrics.interval,
        )
        started = time.time()

        def health() -> dict[str, Any]:
            return {
                "status": "ok",
                "ledger": config.out,
                "hosts": {n: {"provenance": h.provenance} for n, h in hosts.hosts.items()},
                "settle_s": config.settle_s,
                "pending": settler.pending,
                "counts": dict(settler.counts),
                "uptime_s": time.time() - started,
            }

        app = create_app(
            settler,
            metrics,
            group_by=config.group_by,
            api_key=config.resolved_api_key(),
            max_body_bytes=config.max_body_bytes,
            health=health,
        )
        server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        stop = threading.Event()

        def settle_loop() -> None:
            while not stop.wait(TICK_S):
                try:
                    settler.tick()
                except Exception:  # a failed settle must not end the receiver; said in the log
                    log.exception("settling failed")
            settler.tick(final=True)

        def stopper() -> None:
            if config.stop_after_s is not None and not stop.wait(config.stop_after_s):
                server.should_exit = True

        settling = threading.Thread(target=settle_loop, name="wattlm-ledger-settle", daemon=True)
        settling.start()
        threading.Thread(target=stopper, name="wattlm-ledger-stop", daemon=True).start()
        threading.Thread(target=lambda: _ready(server, on_ready, health), daemon=True).start()
        try:
            server.run(sockets=[sock])
        finally:
            stop.set()
            settling.join()
            ledger.close()
    finally:
        sock.close()
        if forwarder is not None:
            forwarder.close()
        hosts.close()
    return 0


class _Server(uvicorn.Server):
    """uvicorn's Server that stops on SIGTERM or Ctrl-C and exits 0 (uvicorn re-raises the signal at
    the end, which would make the exit status 'killed by SIGTERM' after a clean stop)."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.should_exit = True


def _ready(server: Any, on_ready: Callable[[Any], None], health: Callable[[], dict[str, Any]]) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.02)
    if server.started:
        on_ready(health())
