"""Serving plans: J per output token, J per request, output tok/s and inter-token latency of a model
served with continuous batching, for a central case and a range (serving.py has the step model).

The model's shape comes from `model_config` (a Hugging Face config.json: layers, heads, key/value
heads, MoE experts); `params` alone is a dense model of N parameters whose cache is left out, or
estimated as multi-head attention when `layers` and `d_model` are given (an upper bound with GQA).
`from_run` calibrates on a measured `wattlm bench` or `wattlm load` run (calibrate.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..energy.facility import Facility
from ..errors import ConfigError
from ..units import j_to_kwh
from .architecture import Architecture, ParamsOnly, Shape, load_config
from .catalogue import BYTES_PER_PARAM, Hardware, lookup
from .serving import SCENARIOS, Efficiency, Step, Workload, decode_step, max_batch
from .train import check_positive

# a given --mbu is the weights' share; the cache is read at this fraction of it (0.55 / 0.8, serving.SCENARIOS)
KV_OF_WEIGHTS_MBU = SCENARIOS["central"].mbu_kv / SCENARIOS["central"].mbu_weights
PARAMS_TOLERANCE = 0.10  # --params and --model-config disagreeing by more than this is an error


@dataclass(frozen=True)
class InferRequest:
    hardware: str
    params: float | None = None
    model_config: Path | None = None
    tokens: float | None = None  # a volume to total (prompt and output tokens together); None: per-token figures
    batch: int = 1
    prompt_tokens: int = 512
    output_tokens: int = 256
    precision: str = "bf16"
    kv_precision: str | None = None  # default: bf16 (fp32 with fp32 weights)
    devices: int = 1
    chunked_prefill: bool = True
    mfu: float | None = None
    mbu: float | None = None
    power_w: float | None = None
    layers: int | None = None
    d_model: int | None = None
    from_run: Path | None = None
    run_hardware: str | None = None
    run_variant: str | None = None
    run_model_config: Path | None = None
    run_params: float | None = None
    facility: Facility = field(default_factory=Facility)

    def __post_init__(self) -> None:
        for name in ("params", "tokens", "batch", "output_tokens", "devices", "power_w", "layers", "d_model"):
            check_positive(name, getattr(self, name))
        check_positive("run_params", self.run_params)
        if self.prompt_tokens < 0:
            raise ConfigError(
                f"{{prompt_tokens}} must be ≥ 0, got {self.prompt_tokens}",
                field="prompt_tokens",
                value=self.prompt_tokens,
            )
        for name in ("mfu", "mbu"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ConfigError(f"{{{name}}} must lie in (0, 1], got {value:g}", field=name, value=value)
        for name in ("precision", "kv_precision"):
            value = getattr(self, name)
            if value is not None and value not in BYTES_PER_PARAM:
                raise ConfigError(
                    f"{{{name}}} must be one of {', '.join(BYTES_PER_PARAM)}, got {value!r}", field=name, value=value
                )
        if self.params is None and self.model_config is None:
            raise ConfigError("give the model: {model_config} PATH (a config.json) or {params} N", field="params")
        if (self.layers is None) != (self.d_model is None):
            raise ConfigError(
                "the key/value cache term needs both {layers} and {d_model}", field="layers", value=self.layers
            )
        if self.model_config is not None and self.layers is not None:
            raise ConfigError(
                "{model_config} gives the layers and width: leave out {layers} and {d_model}", field="layers"
            )
        if self.from_run is not None and (self.mfu is not None or self.mbu is not None):
            raise ConfigError(
                "{from_run} takes the efficiencies from the measured run: leave out {mfu} and {mbu}",
                field="from_run",
                value=self.from_run,
            )
        lookup(self.hardware)  # an unknown device is named before anything else is said

    @property
    def kv(self) -> str:
        return self.kv_precision or ("fp32" if self.precision == "fp32" else "bf16")

    def workload(self, batch: int | None = None) -> Workload:
        return Workload(
            batch=batch or self.batch,
            prompt_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens,
            devices=self.devices,
            precision=self.precision,
            kv_precision=self.kv,
            chunked_prefill=self.chunked_prefill,
        )


def model_shape(request: InferRequest) -> tuple[Shape, list[str]]:
    """The model (an Architecture or a bare parameter count) and what was assumed to get it."""
    if request.model_config is None:
        shape = ParamsOnly(request.params, request.layers, request.d_model)  # type: ignore[arg-type]
        notes = [
            f"--params alone: a dense model of {request.params:.3g} parameters, all read every step, 2·N FLOPs a token"
            + (
                "; no key/value cache (give --model-config for GQA, MoE and the cache)"
                if request.layers is None
                else "; key/value cache as multi-head attention from --layers and --d-model (an upper bound with GQA)"
            )
        ]
        return shape, notes
    arch = load_config(request.model_config)
    check_against_params(arch, request.params)
    kind = (
        f"MoE {arch.experts} experts, {arch.experts_per_token} per token, {arch.params_active / 1e9:.3g}B active"
        if arch.experts
        else "dense"
    )
    attention = (
        f"latent attention (rank {arch.latent.kv_rank})"
        if arch.latent
        else f"{arch.heads} heads / {arch.kv_heads} key/value heads × {arch.head_dim}"
    )
    notes = [
        f"model {arch.name or request.model_config}: {arch.params_total / 1e9:.3g}B parameters ({kind}), {arch.layers}"
        f" layers, {attention}, KV {arch.kv_bytes_per_token(BYTES_PER_PARAM[request.kv]) / 1024:,.0f} KiB per token"
        f" at {request.kv}",
        *arch.assumed,
    ]
    if arch.experts:
        notes.append("experts picked uniformly and independently: a step reads E·(1 − (1 − k/E)^B) experts a layer")
    return arch, notes


def check_against_params(arch: Architecture, params: float | None) -> None:
    if params is None:
        return
    if abs(arch.params_total / params - 1) > PARAMS_TOLERANCE:
        what = (
            f"{arch.experts} experts of {arch.expert_intermediate} wide, {arch.experts_per_token} per token"
            if arch.experts
            else "its layers and widths"
        )
        raise ConfigError(
            f"{{model_config}} gives {arch.params_total / 1e9:.3g}B parameters ({what}) but {{params}} says"
            f" {params / 1e9:.3g}B: fix one (or leave out {{params}})",
            field="params",
            value=params,
        )


def check_parallel(shape: Shape, devices: int) -> None:
    heads = getattr(shape, "heads", None)
    if devices > 1 and heads:
        if devices > heads:
            raise ConfigError(
                f"tensor parallel over {devices} devices but the model has {heads} attention heads; give {{devices}}"
                f" ≤ {heads}",
                field="devices",
                value=devices,
            )
        if heads % devices:
            raise ConfigError(
                f"{heads} attention heads do not split evenly over {devices} devices; give {{devices}} dividing"
                f" {heads}",
                field="devices",
                value=devices,
            )


def check_fits(shape: Shape, hw: Hardware, request: InferRequest) -> None:
    work = request.workload()
    weights = shape.params_total * BYTES_PER_PARAM[request.precision]
    if hw.memory_gb and weights > hw.memory_gb * 1e9 * request.devices * 0.9:
        raise ConfigError(
            f"the weights need {weights / 1e9:,.1f} GB, more than 90 % of {request.devices} × {hw.memory_gb:g} GB;"
            " add {devices} or lower {precision}",
            field="devices",
            value=request.devices,
        )
    largest = max_batch(shape, hw, work)
    if largest is not None and request.batch > largest:
        raise ConfigError(
            f"a batch of {request.batch} does not fit: next to the weights, the key/value cache holds at most"
            f" {largest} sequences of {request.prompt_tokens} + {request.output_tokens} tokens (half the answer"
            f" resident on average) on {request.devices} × {hw.name}; give {{batch}} ≤ {largest} or more {{devices}}",
            field="batch",
            value=request.batch,
        )


def scenarios(request: InferRequest) -> dict[str, Efficiency]:
    if request.mfu is None and request.mbu is None:
        return dict(SCENARIOS)
    base = SCENARIOS["central"]
    mbu = request.mbu or base.mbu_weights
    return {"central": replace(base, mfu=request.mfu or base.mfu, mbu_weights=mbu, mbu_kv=mbu * KV_OF_WEIGHTS_MBU)}


def _row(step: Step, request: InferRequest) -> dict[str, Any]:
    j_token = step.j_per_output_token
    return {
        "j_per_output_token": j_token,
        "j_per_request": j_token * request.output_tokens,
        "output_tokens_per_s": step.output_tokens_per_s,
        "itl_s": step.itl_s,
        "power_w": step.power_w,
        "decode_bound": step.bound,
        "step": {
            "time_s": step.time_s,
            "memory_s": step.memory_s,
            "compute_s": step.compute_s,
            "comm_s": step.comm_s,
            "weight_bytes": step.weight_bytes,
            "kv_bytes": step.kv_bytes,
            "flops": step.flops,
            "prefill_s_per_request": step.prefill_s_per_request,
        },
    }


def plan_infer(request: InferRequest) -> dict[str, Any]:
    from .calibrate import calibrate

    hw = lookup(request.hardware)
    shape, assumptions = model_shape(request)
    check_parallel(shape, request.devices)
    check_fits(shape, hw, request)
    if request.power_w is None:
        hw.power_levels()  # a device without a published power asks for --power-w here
        power_source = hw.power_levels_source()
    else:
        power_source = "given (--power-w)"
    assumptions += [
        f"power per device from the step's load: {power_source}"
        if request.power_w is None
        else f"power {request.power_w:g} W per device (given), for the whole time",
        (
            "chunked prefill: prompt tokens ride in the decode steps"
            if request.chunked_prefill
            else "no chunked prefill: prompts read in steps of their own, compute-bound"
        ),
    ]
    if request.devices > 1 and isinstance(shape, ParamsOnly) and shape.layers is None:
        assumptions.append("tensor parallel without the model's shape: no all-reduce cost (give --model-config)")
    calibration = None
    rows: dict[str, dict[str, Any]] = {}
    effs = scenarios(request)
    for name, eff in effs.items():
        given = None if request.power_w is None else (request.power_w,) * 3
        rows[name] = _row(decode_step(shape, hw, request.workload(), eff, given), request)
    if request.from_run is not None:
        calibration, rows = calibrate(request, shape, hw, rows)
        assumptions.append(calibration["assumption"])
    elif len(effs) > 1:
        assumptions.append(
            "range: low_energy (MBU 0.9, cache 0.75, MFU 0.6, 0.5 ms a step, power −10 %) to high_energy (MBU 0.6,"
            " cache 0.4, MFU 0.35, 8 ms + 0.3 ms a sequence a step, power +10 %)"
        )
    for row in rows.values():
        _totals(row, request)
    carbon = request.facility.carbon
    assert carbon is not None
    return {
        "mode": "infer",
        "hardware": hw.to_dict(),
        "model": shape.to_dict(),
        "inputs": {k: str(v) if isinstance(v, Path) else v for k, v in request.__dict__.items() if k != "facility"},
        "power_source": power_source,
        "calibration": calibration,
        "max_batch": max_batch(shape, hw, request.workload()),
        "facility": {"method": "cooling" if request.facility.cooling else "pue", "pue": request.facility.pue},
        "carbon": carbon.to_dict(),
        "currency": request.facility.currency if request.facility.price_per_kwh is not None else None,
        "scenarios": rows,
        "assumptions": assumptions,
        "warnings": [],
    }


def _totals(row: dict[str, Any], request: InferRequest) -> None:
    """A volume's energy, device-hours, CO2e and cost, when --tokens gives one."""
    row.update(device_hours=None, it_energy_kwh=None, facility_energy_kwh=None, co2e_t=None, cost=None)
    if request.tokens is None:
        return
    requests = request.tokens / (request.prompt_tokens + request.output_tokens)
    it_j = requests * row["j_per_request"]
    result = request.facility.apply(it_j)
    speed = row.get("output_tokens_per_s")
    row.update(
        requests=requests,
        device_hours=None if not speed else request.devices * requests * request.output_tokens / speed / 3600.0,
        it_energy_kwh=j_to_kwh(it_j),
        facility_energy_kwh=j_to_kwh(result.facility_energy_j),
        co2e_t=result.co2e_g / 1e6,
        cost=result.cost,
    )
