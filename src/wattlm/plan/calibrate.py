"""Calibrating a serving plan on a measured run (`wattlm plan infer --from RUN`).

A `wattlm load` run: every level measured J per output token, output tok/s and power at some
concurrency (Little's law: completed requests a second × mean latency). The plan predicts the same
level for the run's model on the run's hardware (central case); measured ÷ predicted gives a factor
for energy and one for speed, and the target's central prediction is multiplied by the factors of
the level whose concurrency is nearest the target batch (on a log scale). Same model, hardware and
batch as a measured level: the plan returns the measurement.

A `wattlm bench` run: measured J per token of prefill and of decode (at the run's batch) over the
plan's own prediction of each phase gives two factors; the target's phases are multiplied by them.
Energy only: a bench run's J/token does not say how its time would scale.

Both assume the efficiency the run reached carries over to the target, which the plan states.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InvalidInputError
from .architecture import ParamsOnly, Shape, load_config
from .catalogue import Hardware, lookup
from .serving import SCENARIOS, Workload, decode_step

if TYPE_CHECKING:
    from .infer import InferRequest


def calibrate(
    request: InferRequest, shape: Shape, hw: Hardware, rows: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(what the calibration found, the plan's rows replaced by one calibrated central row)."""
    from ..results import RunDir

    run = Path(request.from_run)  # type: ignore[arg-type]
    if not (run / "run.json").is_file():
        raise ConfigError(
            f"{{from_run}} {run}: not a wattlm bench or load run folder (no run.json); wattlm measure files hold no"
            " token counts",
            field="from_run",
        )
    opened = RunDir.open(run)
    kind = opened.info.get("kind")
    if kind == "load":
        return _from_load(request, shape, hw, opened, rows)
    if kind == "bench":
        return _from_bench(request, shape, hw, opened, rows)
    raise ConfigError(f"{{from_run}} {run}: a {kind!r} run; give a wattlm bench or load run", field="from_run")


def _run_shape(request: InferRequest, shape: Shape, params: float | None = None) -> Shape:
    """The measured model: --run-model-config, --run-params, the run's own count, else the target itself."""
    if request.run_model_config is not None:
        return load_config(request.run_model_config)
    if request.run_params is not None:
        return ParamsOnly(request.run_params)
    if params is not None:
        return ParamsOnly(params)
    return shape


def _run_hardware(info: dict[str, Any], given: str | None, fallback: Hardware | None) -> Hardware:
    if given:
        return lookup(given)
    environment = info.get("environment") or {}
    for candidate in (environment.get("gpu"), environment.get("cpu")):
        if candidate:
            try:
                return lookup(str(candidate).replace("NVIDIA ", "").replace("AMD ", ""))
            except InvalidInputError:
                continue
    if fallback is not None:
        return fallback
    raise ConfigError(
        "{from_run}: the run's device is not in the hardware catalogue (or is hidden by a VM); name it with"
        " {run_hardware}",
        field="from_run",
    )


# -- wattlm load ----------------------------------------------------------------------------------


def _level_batch(level: dict[str, Any]) -> float | None:
    """Requests in flight on average over the window (Little's law), or the level's concurrency."""
    rate, e2e = level.get("request_throughput_per_s"), (level.get("e2e_s") or {}).get("mean")
    if rate and e2e:
        return rate * e2e
    return level.get("value") if level.get("mode") == "concurrency" else None


def _from_load(request, shape, hw, opened, rows):  # type: ignore[no-untyped-def]
    levels = [
        r
        for r in opened.records()
        if r.get("status") == "ok" and r.get("j_per_output_token") and r.get("output_tokens_per_s") and _level_batch(r)
    ]
    if not levels:
        raise ConfigError(
            f"{{from_run}} {opened.path}: no level with measured energy per output token (was the run metered?)",
            field="from_run",
        )
    level = min(levels, key=lambda r: abs(math.log(_level_batch(r) / request.batch)))
    batch = _level_batch(level)
    run_hw = _run_hardware({}, request.run_hardware, hw)  # a load run's machine: the target's unless named
    run_shape = _run_shape(request, shape)
    measured_work = Workload(
        batch=max(1, round(batch)),
        prompt_tokens=round(level.get("prompt_tokens_mean") or request.prompt_tokens),
        output_tokens=max(1, round(level.get("output_tokens_mean") or request.output_tokens)),
        precision=request.precision,
        kv_precision=request.kv,
        chunked_prefill=request.chunked_prefill,
    )
    predicted = decode_step(run_shape, run_hw, measured_work, SCENARIOS["central"])
    k_energy = level["j_per_output_token"] / predicted.j_per_output_token
    k_speed = level["output_tokens_per_s"] / predicted.output_tokens_per_s
    central = dict(rows["central"])
    central.update(
        j_per_output_token=central["j_per_output_token"] * k_energy,
        j_per_request=central["j_per_request"] * k_energy,
        output_tokens_per_s=central["output_tokens_per_s"] * k_speed,
        itl_s=central["itl_s"] / k_speed,
        power_w=level.get("avg_power_w"),
    )
    found = {
        "run": str(opened.path),
        "kind": "load",
        "level": level.get("level"),
        "batch": batch,
        "hardware": run_hw.name,
        "provenance": level.get("provenance"),
        "measured": {
            "j_per_output_token": level["j_per_output_token"],
            "output_tokens_per_s": level["output_tokens_per_s"],
            "avg_power_w": level.get("avg_power_w"),
        },
        "predicted": {
            "j_per_output_token": predicted.j_per_output_token,
            "output_tokens_per_s": predicted.output_tokens_per_s,
        },
        "k": {"energy": k_energy, "speed": k_speed},
    }
    found["assumption"] = (
        f"calibrated on {found['run']} level {found['level']} ({batch:.2f} requests in flight, energy"
        f" {found['provenance']}): measured {level['j_per_output_token']:.3g} J and"
        f" {level['output_tokens_per_s']:.3g} tok/s against the plan's {predicted.j_per_output_token:.3g} J and"
        f" {predicted.output_tokens_per_s:.3g} tok/s for the run's model on {run_hw.name}: energy × {k_energy:.3g},"
        f" speed × {k_speed:.3g}, assumed to carry over; power is the level's measured average"
    )
    return found, {"central": central}


# -- wattlm bench ---------------------------------------------------------------------------------


def _phases(shape: Shape, hw: Hardware, work: Workload) -> tuple[float, float]:
    """(J per prompt token, J per output token of decoding alone), central case, prompts in their own steps."""
    step = decode_step(shape, hw, replace(work, chunked_prefill=False), SCENARIOS["central"])
    prefill_per_prompt_token = step.prefill_s_per_request * hw.power_levels()[2] * work.devices
    prefill_per_prompt_token /= max(1, work.prompt_tokens)
    decode = work.devices * step.power_w * step.time_s / work.batch
    return prefill_per_prompt_token, decode


def _from_bench(request, shape, hw, opened, rows):  # type: ignore[no-untyped-def]
    records = [r for r in opened.records() if r.get("status") == "ok"]
    if not records:
        raise ConfigError(f"{{from_run}} {opened.path}: the run has no finished variant", field="from_run")
    record = records[0]
    if request.run_variant is not None:
        chosen = [r for r in records if r["variant"] == request.run_variant]
        if not chosen:
            raise ConfigError(
                f"{{from_run}} {opened.path}: no variant {request.run_variant!r}; it has"
                f" {', '.join(r['variant'] for r in records)}",
                field="from_run",
            )
        record = chosen[0]
    decode = next((d for d in record["decode"] if d.get("batch_size") == request.batch), record["decode"][0])
    prefill_j, decode_j = record["prefill"]["j_per_token"], decode["j_per_token"]
    if not prefill_j or not decode_j:
        raise ConfigError(
            f"{{from_run}} {opened.path}: the run has no energy per token (was it metered?)", field="from_run"
        )
    run_hw = _run_hardware(opened.info, request.run_hardware, None)
    precision = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}.get(record.get("dtype", "fp32"), "fp32")
    run_shape = _run_shape(request, shape, record.get("params_total"))
    run_work = Workload(
        batch=decode.get("batch_size", 1),
        prompt_tokens=max(1, request.prompt_tokens),
        output_tokens=request.output_tokens,
        precision=precision,
        kv_precision="fp32" if precision == "fp32" else "bf16",
        chunked_prefill=False,
    )
    ideal_prefill, ideal_decode = _phases(run_shape, run_hw, run_work)
    k = {"prefill": prefill_j / ideal_prefill, "decode": decode_j / ideal_decode}
    target_prefill, target_decode = _phases(shape, hw, request.workload())
    prefill = k["prefill"] * target_prefill
    dec = k["decode"] * target_decode
    per_output = dec + prefill * request.prompt_tokens / request.output_tokens
    central = {
        **{key: None for key in rows["central"]},
        "j_per_output_token": per_output,
        "j_per_request": per_output * request.output_tokens,
        "prefill_j_per_token": prefill,
        "decode_j_per_token": dec,
        "decode_bound": rows["central"]["decode_bound"],
    }
    found = {
        "run": str(opened.path),
        "kind": "bench",
        "variant": record["variant"],
        "hardware": run_hw.name,
        "precision": precision,
        "batch": run_work.batch,
        "params": run_shape.params_total,
        "provenance": record.get("provenance"),
        "measured_j_per_token": {"prefill": prefill_j, "decode": decode_j},
        "k": k,
    }
    found["assumption"] = (
        f"calibrated on {found['run']} ({found['variant']}, {found['params']:,.0f} parameters, {run_hw.name}, energy"
        f" {found['provenance']}): its measured J/token over the plan's own, k = {k['prefill']:.3g} (prefill) and"
        f" {k['decode']:.3g} (decode), is assumed to carry over to this model and hardware; energy only, no time"
        " estimate"
    )
    return found, {"central": central}
