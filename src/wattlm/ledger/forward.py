"""Each request's energy sent on as an OpenTelemetry metric (counter `wattlm.request.energy`, unit J,
attributes model, host and the --group-by label), so the user's own OTel stack sees it. Uses the SDK's
OTLP/HTTP metric exporter (the `otel` extra), exporting every 10 s from its own thread."""

from __future__ import annotations

from typing import Any

from ..otel import require_sdk, signal_url


class Forwarder:
    def __init__(self, url: str) -> None:
        require_sdk("--forward")
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        endpoint = signal_url(url, "metrics")
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint), export_interval_millis=10_000)
        self._provider = MeterProvider(
            resource=Resource.create({"service.name": "wattlm-ledger"}), metric_readers=[reader]
        )
        self._counter = self._provider.get_meter("wattlm.ledger").create_counter(
            "wattlm.request.energy", unit="J", description="Energy attributed to requests"
        )

    def request(self, line: dict[str, Any]) -> None:
        if line.get("energy_j") is None:
            return
        attrs = {"model": line.get("model") or "", "host": line.get("host") or "", **(line.get("labels") or {})}
        self._counter.add(line["energy_j"], attrs)

    def close(self) -> None:
        self._provider.force_flush(5000)
        self._provider.shutdown()
