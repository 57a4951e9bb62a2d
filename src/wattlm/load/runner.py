"""`wattlm load`: every level of a load profile against one server, metered, one record per level.

    run.json       server (URL, model, what it says it is), load profile, prompts' sha256, environment
    results.jsonl  one line per level: counts, throughput, latency percentiles, goodput, energy of
                   the measured window and energy per output token / request / goodput request, and
                   the per-request energy's percentiles and price list
    requests.jsonl one line per request: its timeline and its share of the level's energy

Energy comes from the local meter (as `wattlm measure`) or, with `energy_from`, from exporters on
the serving machines. When the local CPU energy is estimated from utilisation, the load generator's
own CPU time (it shares the machine) is priced with the same model and taken out of the server's
share; with counters it cannot be separated, and the record says so.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..attribution.series import EnergySeries
from ..energy.measurement import Measurement
from ..energy.meter import EnergyMeter
from ..errors import InvalidInputError
from ..results import RunDir
from .config import LoadConfig
from .level import Level, LevelPlan, LevelRun
from .metrics import energy_figures, summarize
from .probe import ServerInfo, probe
from .prompts import Prompt, from_file, from_text, sha256
from .requests import attribute_level

KIND = "load"


@dataclass
class LoadResult:
    run: Path
    levels: list[dict[str, Any]]
    interrupted: bool = False
    stopped: str = ""  # why the run ended before its last level


def level_name(config: LoadConfig, value: float) -> str:
    return f"{config.mode}={value:g}"


def load_prompts(config: LoadConfig, offline: bool = False) -> tuple[list[Prompt], str]:
    if config.prompts is not None:
        return from_file(config.prompts, config.output_len, config.seed, turns=config.turns), str(config.prompts)
    if config.text is not None:
        from ..models.corpus import load_text_file

        corpus = load_text_file(config.text)
    else:
        from ..models.corpus import default_corpus

        corpus = default_corpus(offline=offline)
    prompts = from_text(
        corpus.text,
        config.input_len,
        config.output_len,
        config.seed,
        turns=config.turns,
        system_len=config.system_prompt_len,
    )
    return prompts, corpus.source


def _meter(config: LoadConfig) -> EnergyMeter:
    if config.energy_from:
        from ..energy.sources.remote import remote_sources

        return EnergyMeter(remote_sources(config.energy_from), interval_s=max(config.interval_s, 1.0))
    return EnergyMeter(interval_s=config.interval_s)


def _generator_share(meter: EnergyMeter, cpu_s: float, remote: bool) -> dict[str, Any]:
    """The load generator's own CPU time and, where CPU energy is estimated here, its energy."""
    from ..energy.sources.estimate import EstimateSource

    rates = [s.j_per_cpu_s for s in meter.sources if isinstance(s, EstimateSource) and s.j_per_cpu_s]
    if remote:
        how = "energy read from exporters: the load generator's machine is not in it unless an exporter runs there"
        return {"cpu_s": cpu_s, "energy_j": 0.0, "how": how}
    if rates:
        j = cpu_s * rates[0]
        how = (
            f"CPU energy is estimated from utilisation, so the generator's {cpu_s:.3g} CPU-s × "
            f"{rates[0]:.3g} J per CPU-s (the model's dynamic part) = {j:.3g} J is taken out of the server's share"
        )
        return {"cpu_s": cpu_s, "energy_j": j, "how": how}
    how = "CPU energy comes from counters, which cannot tell processes apart: the generator's share is included"
    return {"cpu_s": cpu_s, "energy_j": 0.0, "how": how}


def level_record(
    config: LoadConfig,
    plan: LevelPlan,
    run: LevelRun,
    m: Measurement | None,
    meter: EnergyMeter,
    remote_failures: Sequence[str] = (),
) -> dict[str, Any]:
    summary = summarize(run.records, run.window_start_s, run.window_end_s, config.slo)
    status = "ok"
    reasons = []
    if m is None:
        status = "failed" if run.window == "steady" else "partial"
        reasons = [run.stopped or "the level ended before its measured window"]
    else:
        if m.status != "ok":
            status = "partial" if m.status == "partial" else "failed"
            reasons.append(m.reason)
        if run.stopped and run.stopped not in m.reason:
            status = "partial"
            reasons.append(run.stopped)
    if remote_failures:  # exporters that did not answer every read of the window
        status = "partial" if status == "ok" else status
        reasons += sorted(set(remote_failures))
    if summary["requests_failed"] and status == "ok" and summary["requests_completed"] == 0:
        status, reasons = "failed", reasons + ["no request completed"]
    record: dict[str, Any] = {
        "level": level_name(config, plan.value),
        "mode": plan.mode,
        "value": plan.value,
        "window": {
            "kind": run.window,
            "duration_s": max(0.0, run.window_end_s - run.window_start_s),
            **({"most_streaming": run.most_streaming} if run.window == "steady" else {}),
        },
        "status": status,
        "reason": "; ".join(r for r in reasons if r),
        **summary,
        "generator": None,
        "energy_j": None,
        "server_energy_j": None,
        "avg_power_w": None,
        "provenance": None,
    }
    if m is not None:
        gen = _generator_share(meter, run.cpu_s, bool(config.energy_from))
        gen["cpu_s_per_request"] = run.cpu_s / max(1, summary["requests_sent"])
        tokens = summary["window_output_tokens"]
        gen["cpu_s_per_token"] = run.cpu_s / tokens if tokens > 0 else None
        server_j = max(0.0, m.it_energy_j - gen["energy_j"])
        record.update(
            generator=gen,
            energy_j=m.it_energy_j,
            server_energy_j=server_j,
            avg_power_w=m.avg_power_w,
            provenance=m.provenance,
            **energy_figures(summary, server_j),
            measurement=m.to_dict(),
        )
        if m.idle is not None:
            above = max(0.0, server_j - m.idle.static_energy_j)
            record["idle_power_w"] = m.idle.idle_power_w
            record["energy_above_idle_j"] = above
            record["above_idle"] = energy_figures(summary, above)
    return record


def _plans(config: LoadConfig) -> list[LevelPlan]:
    return [
        LevelPlan(
            index=i,
            mode=config.mode,
            value=value,
            warmup_s=config.warmup_s,
            duration_s=config.duration_s,
            requests=config.requests,
            timeout_s=config.timeout_s,
            arrival=config.arrival,
            burstiness=config.burstiness,
            seed=config.seed,
            window=config.window,
            server_batch=config.server_batch,
        )
        for i, value in enumerate(config.levels)
    ]


def run_load(
    config: LoadConfig | None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    offline: bool = False,
    on_level: Callable[[dict[str, Any]], None] | None = None,
    on_tick: Callable[[dict[str, Any]], None] | None = None,
    meter: EnergyMeter | None = None,
) -> LoadResult:
    """Run a load profile into `out`, or continue the run in `resume` with its own config (levels
    already recorded `ok` are not rerun)."""
    if resume is not None:
        run_dir = RunDir.open(resume, kind=KIND)
        config = LoadConfig.from_dict(run_dir.info["config"])
    elif config is None:
        raise InvalidInputError("give a load config, or a run to resume")
    # Everything that can fail on bad input (prompts, exporters, the server) before any load is sent.
    prompts, prompts_source = load_prompts(config, offline=offline)
    own_meter = meter is None  # a meter given by the caller stays open for them
    meter = meter or _meter(config)
    try:
        info = probe(config.url, config.model, config.api, config.stream)
        digest = sha256(prompts)
        if resume is None:
            if out is None:
                raise InvalidInputError("give an output folder for the run")
            run_dir = RunDir.create(out, KIND, _run_info(config, info, prompts_source, len(prompts), digest, meter))
        elif run_dir.info.get("prompts", {}).get("sha256") != digest:
            raise InvalidInputError(
                f"the prompts of {run_dir.path} changed since the run started (sha256 differs): start a new run"
            )
        elif run_dir.info.get("server", {}).get("model") != info.endpoint.model:
            raise InvalidInputError(
                f"{config.url} now serves {info.endpoint.model!r}, not the run's {run_dir.info['server']['model']!r}:"
                " serve the same model to resume, or start a new run"
            )
        done = {r["level"] for r in run_dir.records() if r.get("status") == "ok"}
        if config.idle_s > 0:
            meter.measure_idle(config.idle_s)
        return asyncio.run(_levels(config, info, prompts, meter, run_dir, done, on_level, on_tick))
    finally:
        if own_meter:
            meter.close()


def _run_info(
    config: LoadConfig, info: ServerInfo, prompts_source: str, count: int, digest: str, meter: EnergyMeter
) -> dict[str, Any]:
    from ..environment import machine

    return {
        "config": config.to_dict(),
        "server": {
            "url": config.url,
            "model": info.endpoint.model,
            "models": list(info.models),
            "version": info.version,
            "api": config.api,
            "length_pinned_by": ["max_tokens", *info.pinned_by],
        },
        "prompts": {"source": prompts_source, "count": count, "sha256": digest},
        "energy": {
            "from": list(config.energy_from) or "local meter",
            "channels": [
                {"key": c.key, "label": c.label, "domain": c.domain, "provenance": c.provenance}
                for c in meter.channels.values()
            ],
        },
        "environment": machine(),
    }


async def _levels(
    config: LoadConfig,
    info: ServerInfo,
    prompts: list[Prompt],
    meter: EnergyMeter,
    run_dir: RunDir,
    done: set[str],
    on_level: Callable[[dict[str, Any]], None] | None,
    on_tick: Callable[[dict[str, Any]], None] | None,
) -> LoadResult:
    from .client import session

    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        pass
    result = LoadResult(run_dir.path, [])
    tick = None if on_tick is None else (lambda state: on_tick({**state, "power_w": meter.power_w}))
    try:
        async with session() as client:
            for plan in _plans(config):
                name = level_name(config, plan.value)
                if name in done:
                    continue
                window = f"load:{name}"
                measured: list[Measurement] = []
                seen = {id(s): len(getattr(s, "failures", [])) for s in meter.sources}

                def begin(window: str = window) -> None:
                    meter.begin_window(window)

                def end(reason: str, window: str = window, measured: list[Measurement] = measured) -> None:
                    measured.append(meter.end_window(window, status="partial" if reason else None, reason=reason))

                series = EnergySeries()

                def keep(now: float, readings: dict[str, Any], series: EnergySeries = series) -> None:
                    series.add(now, sum(r.energy_j for r in readings.values()), sum(r.gaps for r in readings.values()))

                # The level's energy as a time series, warm-up to drain, for each request's share.
                meter.listen(keep)
                await asyncio.to_thread(meter.begin_window, f"{window}:series")
                try:
                    run = await Level(plan, info.endpoint, prompts, client, begin, end, interrupted, tick)()
                finally:
                    await asyncio.to_thread(meter.end_window, f"{window}:series")
                    meter.unlisten(keep)
                failures = [f for s in meter.sources for f in getattr(s, "failures", [])[seen[id(s)] :]]
                record = level_record(config, plan, run, measured[0] if measured else None, meter, failures)
                attempt = secrets.token_hex(4)
                lines, per_request = attribute_level(
                    run.records, series, level=name, attempt=attempt, provenance=meter.provenance
                )
                record["requests_attempt"] = attempt
                record["request_energy"] = per_request
                run_dir.append_requests(lines)
                t0 = series.times_s[0] if series.times_s else 0.0
                run_dir.append_series(
                    {
                        "level": name,
                        "attempt": attempt,
                        "clock": "seconds from the first read (the request timelines' clock)",
                        "times_s": [round(t - t0, 6) for t in series.times_s],
                        "energy_j": [e - series.energy_j[0] for e in series.energy_j],
                        "gaps": series.gaps,
                        "provenance": meter.provenance,
                    }
                )
                run_dir.append(record)
                result.levels.append(record)
                if on_level is not None:
                    on_level(record)
                if run.stopped:
                    result.stopped = run.stopped
                    result.interrupted = interrupted.is_set()
                    break
    finally:
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    return result
