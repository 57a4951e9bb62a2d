"""`wattlm ledger`: energy per request for any server that sends OpenTelemetry traces (vLLM, SGLang,
wattlm serve), received over OTLP/HTTP and split against each host's metered energy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from .common import err, warn


def _address(value: str) -> tuple[str, int]:
    from ..errors import ConfigError

    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{{otlp}} {value!r} is not HOST:PORT, e.g. 127.0.0.1:4318", field="otlp")
    return host.strip("[]"), int(port)


def _pairs(value: Optional[str]) -> dict[str, str]:
    from ..errors import ConfigError

    out: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        name, sep, target = item.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ConfigError(
                f"{{host_map}} {item!r} is not SPAN_HOST=EXPORTER, e.g. node-a=10.0.0.1:9464", field="host_map"
            )
        out[name.strip()] = target.strip()
    return out


def _work_model(value: Optional[str]) -> Optional[tuple[float, float, float]]:
    """a,b[,c] in seconds, or a JSON file holding a work model (`wattlm serve`'s /stats answer)."""
    from ..attribution.work import work_model_from
    from ..errors import ConfigError

    if value is None or value == "fit":
        return None
    path = Path(value)
    try:
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            m = work_model_from(data.get("work_model", data))
            return (m.a, m.b, m.c)
        parts = [float(x) for x in value.split(",")]
    except (ValueError, OSError, AttributeError) as e:
        raise ConfigError(
            f"{{work_model}} {value!r}: {e}; give a,b[,c] or a JSON file with a work model", field="work_model"
        ) from e
    if len(parts) not in (2, 3):
        raise ConfigError(f"{{work_model}} {value!r}: give a,b or a,b,c (seconds per token)", field="work_model")
    return (parts[0], parts[1], parts[2] if len(parts) == 3 else 0.0)


def ledger(
    out: Annotated[str, typer.Option(help="The ledger (JSONL); a restart continues it.")] = "wattlm-ledger.jsonl",
    otlp: Annotated[
        str, typer.Option(help="HOST:PORT to receive OTLP/HTTP traces on (and /metrics, /health).")
    ] = "127.0.0.1:4318",
    energy_from: Annotated[
        Optional[str],
        typer.Option(help="Exporters, one per host: URL[,URL...] (wattlm, dcgm, Kepler); default: this machine."),
    ] = None,
    host_map: Annotated[
        Optional[str],
        typer.Option(help="SPAN_HOST=EXPORTER[,...] where a span's host.name differs from its exporter's address."),
    ] = None,
    settle_s: Annotated[
        float,
        typer.Option(
            "--settle-s",
            help="Seconds an interval waits for its spans (above the longest request + export delay).",
        ),
    ] = 30.0,
    group_by: Annotated[
        Optional[str], typer.Option(help="A span or resource attribute (e.g. tenant) to sum energy by on /metrics.")
    ] = None,
    work_model: Annotated[
        Optional[str],
        typer.Option(
            help="a,b[,c] s per prompt token, decode token, attended position; a JSON file; or fit. Default a = b.",
        ),
    ] = None,
    forward: Annotated[
        Optional[str], typer.Option(help="Send each request's energy as an OTel metric to this OTLP/HTTP URL.")
    ] = None,
    api_key: Annotated[
        Optional[str],
        typer.Option(
            help="Senders must give it (Authorization: Bearer KEY); required off loopback (or WATTLM_API_KEY)."
        ),
    ] = None,
    interval: Annotated[float, typer.Option(help="Meter sampling interval in seconds (exporters: at least 1).")] = 0.25,
    max_body_mb: Annotated[float, typer.Option(help="Largest OTLP body accepted, MiB.")] = 16.0,
    stop_after: Annotated[
        Optional[float], typer.Option(help="Stop after this many seconds (default: until Ctrl-C or SIGTERM).")
    ] = None,
) -> None:
    """Receive a server's OpenTelemetry traces and write the energy of every request (JSONL, /metrics)."""
    from ..ledger.config import LedgerConfig
    from ..ledger.service import run

    host, port = _address(otlp)
    config = LedgerConfig(
        out=out,
        host=host,
        port=port,
        energy_from=tuple(u.strip() for u in (energy_from or "").split(",") if u.strip()),
        host_map=_pairs(host_map),
        settle_s=settle_s,
        interval_s=interval,
        group_by=group_by,
        api_key=api_key,
        work_model=_work_model(work_model),
        fit_work_model=work_model == "fit",
        forward=forward,
        max_body_bytes=int(max_body_mb * (1 << 20)),
        stop_after_s=stop_after,
    )

    def ready(info: dict) -> None:  # type: ignore[type-arg]
        provenances = {h["provenance"] for h in info["hosts"].values()}
        if "estimated" in provenances:
            warn("energy is ESTIMATED on at least one host (no counter): every request's energy says so")
        err.print(
            Text(
                f"receiving OTLP traces on http://{host}:{port}/v1/traces; energy from {', '.join(info['hosts'])};"
                f" settling after {settle_s:g} s; ledger {out}",
                "green",
            )
        )

    raise typer.Exit(run(config, on_ready=ready))
