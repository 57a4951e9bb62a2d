"""`wattlm serve`: an OpenAI-compatible server with continuous batching that returns, with every
answer, the energy that request used."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.text import Text

from .common import err, warn

if TYPE_CHECKING:
    from ..variants.cache import Calibration


def serve(
    from_report: Annotated[
        Optional[Path],
        typer.Option(help="Serve what a `wattlm bench` run recommends (its decode choice within --budget)."),
    ] = None,
    budget: Annotated[str, typer.Option(help="With --from-report: the quality budget, ΔPPL in %.")] = "2%",
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
    calib_text: Annotated[
        Optional[Path],
        typer.Option(help="Calibration text of a calibrated variant (default: bench's, after the tokens it scores)."),
    ] = None,
    calib_samples: Annotated[int, typer.Option(help="Calibration windows of 512 tokens (bench's default).")] = 128,
    no_attribution: Annotated[
        bool,
        typer.Option("--no-attribution", help="Do not split energy per request (to measure what splitting costs)."),
    ] = False,
) -> None:
    """Serve a model over the OpenAI API, with the measured energy of every request."""
    from ..serve.config import ServeConfig
    from ..serve.server import run
    from ..variants.cache import Calibration

    calibration = Calibration(str(calib_text) if calib_text else None, calib_samples)
    if from_report is not None:
        model, variant, calibration = _recommended(from_report, budget, model, variant, calib_text)
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
        calibration=calibration,
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


def _recommended(
    run: Path, budget: str, model: str | None, variant: str | None, calib_text: Path | None
) -> tuple[str | None, str, Calibration]:
    """(model, variant, calibration) of what the bench run in `run` recommends for decoding."""
    from ..errors import InvalidInputError
    from ..report.data import ReportOptions, parse_budget, run_section
    from ..results import RunDir
    from ..variants.cache import Calibration

    if model is not None or variant is not None or calib_text is not None:
        raise InvalidInputError("--from-report chooses the model, the variant and its calibration: give none of them")
    section = run_section(run, ReportOptions(parse_budget(budget)))
    chosen = section["recommendation"]["decode"]
    if chosen["variant"] is None:
        raise InvalidInputError(f"{run}: no variant of this run qualifies within {budget}; raise --budget")
    spec = section["model"] or {}
    config = RunDir.open(run, kind="bench").info.get("config") or {}
    saving = chosen.get("saving_pct")
    err.print(
        f"{run}: serving {chosen['variant']} (ΔPPL {chosen['delta_ppl_pct']:+.2f} %"
        + (f", {saving:.0f} % less decode energy than the baseline" if saving is not None else "")
        + ")"
    )
    model = None if spec.get("kind") == "default" else spec.get("location")
    return model, chosen["variant"], Calibration.from_bench_config(config)
