"""What wattlm's OpenTelemetry senders share (`wattlm serve`'s spans, `wattlm ledger --forward`): the
OTLP/HTTP address of a signal, and the SDK (the `otel` extra), loaded only when asked for."""

from __future__ import annotations

from .errors import InvalidInputError


def signal_url(endpoint: str, signal: str) -> str:
    """HOST:PORT, http://HOST:PORT or a full …/v1/<signal> address, as the full address."""
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    suffix = f"/v1/{signal}"
    return url if url.rstrip("/").endswith(suffix) else url.rstrip("/") + suffix


def require_sdk(what: str) -> None:
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
        import opentelemetry.sdk  # noqa: F401
    except ImportError as e:
        raise InvalidInputError(f"{what} needs the OpenTelemetry SDK: pip install 'wattlm[otel]'") from e
