"""Serving plans from a roofline: energy per token of prefill and decode, and totals for a volume.

    prefill, per token  t = 2·N / (D · peak · MFU)                          compute-bound
    decode, per step    t = max((W + B·KV) / (D · BW · MBU), 2·N·B / (D · peak · MFU))
                        per token t / B                                       memory-bound at small B
    energy per token    = D · power · t (per token)
N parameters, W = N · bytes per parameter at --precision, B the batch, D devices holding one copy
of the model (tensor parallel), KV the key/value bytes a decode step reads per sequence
(2 · layers · d_model · bytes · mean context; only when --layers and --d-model are given, an upper
bound for grouped-query attention). Without --mfu / --mbu the plan is a range: MFU 0.3–0.5 for
prefill, MBU (achieved share of memory bandwidth) 0.5–0.8 for decode.

`from_run` replaces the assumed efficiencies with a measured `wattlm bench` run: each phase's
measured J/token divided by the ideal roofline (MFU = MBU = 1) of the run's own model and hardware
gives a factor k, and the target's ideal roofline is multiplied by the same k. That assumes the
efficiency the run reached carries over to the target model and hardware, which the plan states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..energy.facility import Facility
from ..errors import ConfigError, InvalidInputError
from ..units import j_to_kwh
from .catalogue import BYTES_PER_PARAM, Hardware, lookup
from .train import check_positive

MFU_RANGE = (0.3, 0.4, 0.5)
MBU_RANGE = (0.5, 0.65, 0.8)


@dataclass(frozen=True)
class InferRequest:
    params: float
    hardware: str
    tokens: float
    batch: int = 1
    prompt_tokens: int = 512
    output_tokens: int = 256
    precision: str = "bf16"
    devices: int = 1
    mfu: float | None = None
    mbu: float | None = None
    power_w: float | None = None
    layers: int | None = None
    d_model: int | None = None
    from_run: Path | None = None
    run_hardware: str | None = None
    run_variant: str | None = None
    facility: Facility = field(default_factory=Facility)

    def __post_init__(self) -> None:
        for name in ("params", "tokens", "batch", "output_tokens", "devices", "power_w", "layers", "d_model"):
            check_positive(name, getattr(self, name))
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
        if self.precision not in BYTES_PER_PARAM:
            raise ConfigError(
                f"{{precision}} must be one of {', '.join(BYTES_PER_PARAM)}, got {self.precision!r}",
                field="precision",
                value=self.precision,
            )
        if (self.layers is None) != (self.d_model is None):
            raise ConfigError(
                "the key/value cache term needs both {layers} and {d_model}", field="layers", value=self.layers
            )
        if self.from_run is not None and (self.mfu is not None or self.mbu is not None):
            raise ConfigError(
                "{from_run} takes the efficiencies from the measured run: leave out {mfu} and {mbu}",
                field="from_run",
                value=self.from_run,
            )


@dataclass(frozen=True)
class Roofline:
    """Seconds per token of each phase for one model on one set of devices."""

    prefill_s: float
    decode_s: float
    decode_bound: str  # "memory" or "compute"
    weight_bytes: float


def roofline(
    params: float,
    hw: Hardware,
    precision: str,
    *,
    batch: int,
    devices: int,
    mfu: float,
    mbu: float,
    kv_bytes_per_seq: float = 0.0,
) -> Roofline:
    peak = hw.peak_flops("int8" if precision == "int4" else precision) * devices * mfu
    bandwidth = hw.bandwidth_gb_s * 1e9 * devices * mbu
    weights = params * BYTES_PER_PARAM[precision]
    memory_s = (weights + batch * kv_bytes_per_seq) / bandwidth
    compute_s = 2.0 * params * batch / peak
    return Roofline(
        2.0 * params / peak, max(memory_s, compute_s) / batch, "memory" if memory_s >= compute_s else "compute", weights
    )


def _kv_bytes(request: InferRequest) -> float:
    if not request.layers:
        return 0.0
    context = request.prompt_tokens + request.output_tokens / 2  # mean context length while decoding
    return 2.0 * request.layers * request.d_model * BYTES_PER_PARAM[request.precision] * context  # type: ignore[operator]


def _measured(run: Path, variant: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run.json, the variant's record) of a wattlm bench run folder."""
    from ..results import RunDir

    if not (run / "run.json").is_file():
        raise ConfigError(
            f"{{from_run}} {run}: not a wattlm bench run folder (no run.json); wattlm measure files hold no"
            " token counts",
            field="from_run",
        )
    opened = RunDir.open(run, kind="bench")
    info = opened.info
    records = [r for r in opened.records() if r.get("status") == "ok"]
    if not records:
        raise ConfigError(f"{{from_run}} {run}: the run has no finished variant", field="from_run")
    if variant is None:
        return info, records[0]
    for record in records:
        if record["variant"] == variant:
            return info, record
    raise ConfigError(
        f"{{from_run}} {run}: no variant {variant!r}; it has {', '.join(r['variant'] for r in records)}",
        field="from_run",
    )


def _run_hardware(info: dict[str, Any], given: str | None) -> Hardware:
    if given:
        return lookup(given)
    environment = info.get("environment") or {}
    for candidate in (environment.get("gpu"), environment.get("cpu")):
        if candidate:
            try:
                return lookup(str(candidate).replace("NVIDIA ", "").replace("AMD ", ""))
            except InvalidInputError:
                continue
    raise ConfigError(
        "{from_run}: the run's device is not in the hardware catalogue (or is hidden by a VM); name it with"
        " {run_hardware}",
        field="from_run",
    )


def _calibration(request: InferRequest) -> dict[str, Any]:
    """k per phase: measured J/token ÷ the ideal roofline J/token of the run's own model and hardware."""
    info, record = _measured(Path(request.from_run), request.run_variant)  # type: ignore[arg-type]
    hw = _run_hardware(info, request.run_hardware)
    power, power_source = hw.power_w(None)
    precision = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}.get(record.get("dtype", "fp32"), "fp32")
    decode = next((d for d in record["decode"] if d.get("batch_size") == request.batch), record["decode"][0])
    batch = decode.get("batch_size", 1)
    ideal = roofline(record["params_total"], hw, precision, batch=batch, devices=1, mfu=1.0, mbu=1.0)
    prefill_j, decode_j = record["prefill"]["j_per_token"], decode["j_per_token"]
    if not prefill_j or not decode_j:
        raise ConfigError(
            f"{{from_run}} {request.from_run}: the run has no energy per token (was it metered?)", field="from_run"
        )
    return {
        "run": str(request.from_run),
        "variant": record["variant"],
        "hardware": hw.name,
        "precision": precision,
        "batch": batch,
        "params": record["params_total"],
        "provenance": record.get("provenance"),
        "measured_j_per_token": {"prefill": prefill_j, "decode": decode_j},
        "k": {"prefill": prefill_j / (power * ideal.prefill_s), "decode": decode_j / (power * ideal.decode_s)},
        "power_source": power_source,
    }


def plan_infer(request: InferRequest) -> dict[str, Any]:
    hw = lookup(request.hardware)
    power_w, power_source = hw.power_w(request.power_w)
    total_w = power_w * request.devices
    kv = _kv_bytes(request)
    requests = request.tokens / (request.prompt_tokens + request.output_tokens)
    prefill_tokens, decode_tokens = requests * request.prompt_tokens, requests * request.output_tokens
    assumptions = [
        f"power {power_w:g} W per device ({power_source}) × {request.devices} device(s), for the whole time",
        (
            f"--tokens counts prompt and output tokens: {requests:,.0f} requests of {request.prompt_tokens} +"
            f" {request.output_tokens}"
        ),
        "weights read once per decode step (one copy across the devices); attention FLOPs of prefill not counted",
        (
            "no key/value cache reads (give --layers and --d-model to add them)"
            if not kv
            else "key/value cache read in full every step (MHA; an upper bound with GQA)"
        ),
    ]
    calibration = None
    if request.from_run is not None:
        calibration = _calibration(request)
        efficiencies = {"central": (1.0, 1.0)}
        assumptions.append(
            f"calibrated on {calibration['run']} ({calibration['variant']}, {calibration['params']:,} parameters,"
            f" {calibration['hardware']}, energy {calibration['provenance']}): its measured J/token over the ideal"
            f" roofline, k = {calibration['k']['prefill']:.3g} (prefill) and {calibration['k']['decode']:.3g} (decode),"
            " is assumed to carry over to this model and hardware; energy only, no time estimate"
        )
    elif request.mfu is not None or request.mbu is not None:
        efficiencies = {"central": (request.mfu or MFU_RANGE[1], request.mbu or MBU_RANGE[1])}
    else:
        efficiencies = {
            "low_efficiency": (MFU_RANGE[0], MBU_RANGE[0]),
            "central": (MFU_RANGE[1], MBU_RANGE[1]),
            "high_efficiency": (MFU_RANGE[2], MBU_RANGE[2]),
        }
        assumptions.append(
            f"no --mfu / --mbu: a range over MFU {MFU_RANGE[0]}–{MFU_RANGE[2]} and MBU {MBU_RANGE[0]}–{MBU_RANGE[2]}"
        )
    scenarios = {}
    for name, (mfu, mbu) in efficiencies.items():
        line = roofline(
            request.params,
            hw,
            request.precision,
            batch=request.batch,
            devices=request.devices,
            mfu=mfu,
            mbu=mbu,
            kv_bytes_per_seq=kv,
        )
        prefill_j = total_w * line.prefill_s * (calibration["k"]["prefill"] if calibration else 1.0)
        decode_j = total_w * line.decode_s * (calibration["k"]["decode"] if calibration else 1.0)
        it_j = prefill_tokens * prefill_j + decode_tokens * decode_j
        result = request.facility.apply(it_j)
        scenarios[name] = {
            "mfu": None if calibration else mfu,
            "mbu": None if calibration else mbu,
            "prefill_j_per_token": prefill_j,
            "decode_j_per_token": decode_j,
            "decode_bound": line.decode_bound,
            # calibrated plans predict energy only: the run's J/token does not say how its time would scale
            "prefill_tokens_per_s": None if calibration else 1.0 / line.prefill_s,
            "decode_tokens_per_s": None if calibration else 1.0 / line.decode_s,
            "device_hours": (
                None
                if calibration
                else request.devices * (prefill_tokens * line.prefill_s + decode_tokens * line.decode_s) / 3600.0
            ),
            "it_energy_kwh": j_to_kwh(it_j),
            "facility_energy_kwh": j_to_kwh(result.facility_energy_j),
            "co2e_t": result.co2e_g / 1e6,
            "cost": result.cost,
        }
    warnings = []
    needed = request.params * BYTES_PER_PARAM[request.precision] + request.batch * kv
    if hw.memory_gb and needed > hw.memory_gb * 1e9 * request.devices:
        warnings.append(
            f"the weights (and cache) need {needed / 1e9:,.1f} GB: more than {request.devices} × {hw.memory_gb:g} GB;"
            " add --devices"
        )
    carbon = request.facility.carbon
    assert carbon is not None
    return {
        "mode": "infer",
        "hardware": hw.to_dict(),
        "inputs": {k: str(v) if isinstance(v, Path) else v for k, v in request.__dict__.items() if k != "facility"},
        "power_w": power_w,
        "power_source": power_source,
        "calibration": calibration,
        "facility": {"method": "cooling" if request.facility.cooling else "pue", "pue": request.facility.pue},
        "carbon": carbon.to_dict(),
        "currency": request.facility.currency if request.facility.price_per_kwh is not None else None,
        "scenarios": scenarios,
        "assumptions": assumptions,
        "warnings": warnings,
    }
