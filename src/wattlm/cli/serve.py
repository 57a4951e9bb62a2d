"""`wattlm serve`: an OpenAI-compatible server with continuous batching that returns, with every
answer, the energy that request used."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.text import Text

from .common import err, warn


def serve(
    model: Annotated[
        Optional[str], typer.Option(help="A .gguf file or a model folder (default: the embedded model).")
    ] = None,
    variant: Annotated[
        Optional[str],
        typer.Option(help="A bench variant: gguf-source (a .gguf as it is), gguf-q4_0, fp32, bf16, int8, ..."),
    ] = None,
    engine: Annotated[
        Optional[str], typer.Option(help="llamacpp or hf (transformers); default: the one the variant runs in.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        Optional[str],
        typer.Option(help="Require 'Authorization: Bearer KEY' on every request (or set WATTLM_API_KEY)."),
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Most sequences decoded together in one step.")] = 8,
    max_queue: Annotated[int, typer.Option(help="Most requests waiting for a slot; more get 429.")] = 64,
    max_prompt_tokens: Annotated[int, typer.Option(help="Longest prompt accepted, in tokens.")] = 1536,
    max_new_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 512,
    step_tokens: Annotated[int, typer.Option(help="Tokens per engine step (decode first, then prompt chunks).")] = 256,
    slo_tpot: Annotated[
        Optional[float],
        typer.Option(
            help="Seconds per output token to meet: the batch is capped at the most energy-efficient size that does."
        ),
    ] = None,
    slo_ttft: Annotated[
        Optional[float],
        typer.Option(help="Seconds to the first token to meet: with --schedule auto, prompts are read in chunks."),
    ] = None,
    schedule: Annotated[
        str,
        typer.Option(
            help="interleave (prompt chunks share every step: low TTFT), prefill-first (whole prompts at once, "
            "as llama-server: low TPOT), or auto (prefill-first under --slo-tpot alone, else interleave)."
        ),
    ] = "auto",
    prefill_tokens: Annotated[
        int, typer.Option(help="prefill-first: most prompt tokens one step reads (in --step-tokens chunks).")
    ] = 2048,
    no_prefix_cache: Annotated[
        bool,
        typer.Option(
            "--no-prefix-cache", help="Read every prompt whole instead of reusing the cells of a cached prefix."
        ),
    ] = False,
    drain_s: Annotated[float, typer.Option(help="On SIGTERM, how long running requests may take to finish.")] = 30.0,
    ledger: Annotated[
        Optional[str], typer.Option(help="JSONL file, one line per request (default ./wattlm-serve-ledger.jsonl).")
    ] = None,
    interval: Annotated[float, typer.Option(help="Meter sampling interval in seconds.")] = 0.1,
    otlp_traces_endpoint: Annotated[
        Optional[str],
        typer.Option(
            help="Send one OpenTelemetry span per request there (OTLP/HTTP, vLLM's names); needs wattlm[otel]."
        ),
    ] = None,
    threads: Annotated[
        Optional[int], typer.Option(help="Engine threads (default: every CPU this process may use).")
    ] = None,
    no_attribution: Annotated[
        bool,
        typer.Option("--no-attribution", help="Do not split energy per request (to measure what splitting costs)."),
    ] = False,
) -> None:
    """Serve a model over the OpenAI API, with the measured energy of every request."""
    from ..serve.config import ServeConfig
    from ..serve.server import run

    config = ServeConfig(
        model=model,
        variant=variant,
        engine=engine,
        host=host,
        port=port,
        api_key=api_key,
        max_batch=max_batch,
        max_queue=max_queue,
        max_prompt_tokens=max_prompt_tokens,
        max_new_tokens=max_new_tokens,
        step_tokens=step_tokens,
        slo_tpot_s=slo_tpot,
        slo_ttft_s=slo_ttft,
        schedule=schedule,
        prefill_tokens=prefill_tokens,
        prefix_cache=not no_prefix_cache,
        drain_s=drain_s,
        ledger=ledger,
        interval_s=interval,
        otlp_traces_endpoint=otlp_traces_endpoint,
        threads=threads,
        attribution=not no_attribution,
    )

    def ready(service) -> None:  # type: ignore[no-untyped-def]
        info = service.health()
        energy = info.get("energy", {})
        if energy.get("provenance") == "estimated":
            warn("no energy counter here: request energy is ESTIMATED from CPU utilisation (see `wattlm devices`)")
        err.print(
            Text(
                f"serving {info['model']} on http://{host}:{port}/v1 ({config.max_batch} slots, "
                f"{config.resolved_schedule}, prefix cache {'on' if config.prefix_cache else 'off'}, "
                f"energy {energy.get('provenance', 'off')}; ledger {service.ledger.path})",
                "green",
            )
        )

    raise typer.Exit(run(config, on_ready=ready))
