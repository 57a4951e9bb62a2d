"""What `wattlm ledger` shows on /metrics (Prometheus): energy per request by model and by one chosen
label, idle and metered energy per host, and what became of every span. Label sets stay bounded:
past MAX_VALUES distinct values of a label, new ones are counted under "other"."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

MAX_VALUES = 100


def label_name(key: str) -> str:
    """A span attribute's name as a Prometheus label name (tenant.id → tenant_id)."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    return name if re.match(r"[a-zA-Z_]", name) else f"_{name}"


class LedgerMetrics:
    def __init__(self, group_by: str | None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.group = label_name(group_by) if group_by else None
        labels = ["model"] + ([self.group] if self.group else [])
        r = self.registry
        self.request_energy = Counter(
            "wattlm_request_energy_joules", "Energy attributed to requests, J", labels, registry=r
        )
        self.requests = Counter("wattlm_ledger_requests", "Request lines written, by status", ["status"], registry=r)
        self.unattributed = Counter(
            "wattlm_ledger_unattributed", "Requests that could not be attributed, by reason", ["reason"], registry=r
        )
        self.spans = Counter("wattlm_ledger_spans", "Spans received, by what became of them", ["result"], registry=r)
        self.rejected = Counter(
            "wattlm_ledger_rejected_payloads", "OTLP bodies refused, by reason", ["reason"], registry=r
        )
        self.host_energy = Counter(
            "wattlm_ledger_energy_joules",
            "Settled energy per host: to requests or idle, J",
            ["host", "part"],
            registry=r,
        )
        self.pending = Gauge("wattlm_ledger_pending_spans", "Spans waiting for their intervals to settle", registry=r)
        self._values: dict[str, set[str]] = {}

    def bounded(self, label: str, value: str) -> str:
        seen = self._values.setdefault(label, set())
        if value in seen or len(seen) < MAX_VALUES:
            seen.add(value)
            return value
        return "other"

    def request(self, line: dict[str, Any]) -> None:
        self.requests.labels(line["status"]).inc()
        if line["status"] == "unattributed":
            self.unattributed.labels(str(line["reason"]).split(":", 1)[0]).inc()
            return
        values = [self.bounded("model", line["model"] or "")]
        if self.group:
            values.append(self.bounded(self.group, next(iter(line["labels"].values()), "") or ""))
        self.request_energy.labels(*values).inc(line["energy_j"])

    def interval(self, line: dict[str, Any]) -> None:
        self.host_energy.labels(line["host"], "requests").inc(line["requests_j"])
        self.host_energy.labels(line["host"], "idle").inc(line["idle_j"])
