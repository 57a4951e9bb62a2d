"""ACCOUNT: `wattlm ledger` — energy per request for any server that sends OpenTelemetry traces.

otlp.py decodes OTLP/HTTP bodies, spans.py maps each engine's span attributes to a request timeline,
hosts.py keeps each host's energy as a bounded time series, settle.py splits it once every span that
could overlap an interval has arrived, store.py writes the ledger, app.py is the HTTP receiver."""
