"""Training plans: FLOPs → device-hours → IT energy → facility energy, CO2e and cost.

    FLOPs        = 6·N·D                      (N parameters, D training tokens: forward 2N, backward 4N per token)
                 + 12·L·d·T·D  when layers L, width d and sequence length T are given: the attention
                   score and value matmuls (PaLM, Chowdhery et al. 2022, appendix B; not halved for the
                   causal mask, as there)
    device-hours = FLOPs / (peak · MFU) / 3600       peak: the catalogue's dense figure at --precision
    IT energy    = device-hours · power               power: --power-w (a measured average) or the TDP
    facility     = IT energy · PUE, or + IT energy / COP (energy.facility's cooling model)
Direct mode (`gpu_hours`) skips the first two lines: the published or booked hours times the power.
Without an MFU the plan is a range over MFU 0.3–0.5 (central 0.4), and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..energy.facility import Facility
from ..errors import ConfigError
from ..units import j_to_kwh
from .catalogue import PRECISIONS, lookup

MFU_RANGE = (0.3, 0.4, 0.5)  # (low, central, high) when none is given: typical of large dense runs on GPUs


def check_positive(name: str, value: float | None) -> None:
    """`name` is the request field."""
    if value is not None and not value > 0:
        raise ConfigError(f"{{{name}}} must be positive, got {value:g}", field=name, value=value)


@dataclass(frozen=True)
class TrainRequest:
    params: float | None = None
    tokens: float | None = None
    hardware: str | None = None
    devices: int | None = None
    mfu: float | None = None
    precision: str = "bf16"
    layers: int | None = None
    d_model: int | None = None
    seq_len: int | None = None
    gpu_hours: float | None = None
    power_w: float | None = None
    facility: Facility = field(default_factory=Facility)

    def __post_init__(self) -> None:
        for name in ("params", "tokens", "devices", "layers", "d_model", "seq_len", "gpu_hours", "power_w"):
            check_positive(name, getattr(self, name))
        if self.mfu is not None and not 0 < self.mfu <= 1:
            raise ConfigError(f"{{mfu}} must lie in (0, 1], got {self.mfu:g}", field="mfu", value=self.mfu)
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"{{precision}} must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
                field="precision",
                value=self.precision,
            )
        attention = [self.layers, self.d_model, self.seq_len]
        if any(v is not None for v in attention) and None in attention:
            raise ConfigError(
                "the attention-aware count needs all of {layers}, {d_model} and {seq_len}",
                field="layers",
                value=self.layers,
            )
        if self.hardware is not None:
            lookup(self.hardware)  # a misspelt device is named first, with the closest catalogue names
        if self.gpu_hours is None:
            missing = [n for n in ("params", "tokens", "hardware", "devices") if getattr(self, n) is None]
            if missing:
                names = ", ".join("{" + m + "}" for m in missing)
                raise ConfigError(
                    f"give {names} (or {{gpu_hours}} with {{power_w}} or {{hardware}} for the direct mode)",
                    field=missing[0],
                )
        elif self.hardware is None and self.power_w is None:
            raise ConfigError(
                "{gpu_hours} needs the power per device: {power_w} W, or {hardware} NAME for its TDP",
                field="gpu_hours",
                value=self.gpu_hours,
            )


def training_flops(
    params: float, tokens: float, layers: int | None = None, d_model: int | None = None, seq_len: int | None = None
) -> float:
    """6·N·D, plus 12·L·d·T·D for attention when the shape is given."""
    flops = 6.0 * params * tokens
    if layers and d_model and seq_len:
        flops += 12.0 * layers * d_model * seq_len * tokens
    return flops


def _scenario(
    device_hours: float, devices: int | None, power_w: float, facility: Facility, mfu: float | None
) -> dict[str, Any]:
    it_j = device_hours * 3600.0 * power_w
    result = facility.apply(it_j)
    return {
        "mfu": mfu,
        "device_hours": device_hours,
        "wall_time_h": device_hours / devices if devices else None,
        "it_energy_kwh": j_to_kwh(it_j),
        "facility_energy_kwh": j_to_kwh(result.facility_energy_j),
        "co2e_t": result.co2e_g / 1e6,
        "cost": result.cost,
    }


def plan_train(request: TrainRequest) -> dict[str, Any]:
    """The plan as a JSON-ready dict: inputs, assumptions, and one scenario per MFU considered."""
    hardware = lookup(request.hardware) if request.hardware else None
    power_w, power_source = hardware.power_w(request.power_w) if hardware else (request.power_w, "given (--power-w)")
    facility = request.facility
    assumptions = [
        f"power per device {power_w:g} W: {power_source}; host CPUs, network and storage are not included unless that"
        " figure includes them"
    ]
    plan: dict[str, Any] = {
        "mode": "direct" if request.gpu_hours is not None else "flops",
        "hardware": hardware.to_dict() if hardware else None,
    }
    assert power_w is not None  # TrainRequest refuses a request with neither --power-w nor --hardware
    if request.gpu_hours is not None:
        scenarios = {"central": _scenario(request.gpu_hours, request.devices, power_w, facility, None)}
        assumptions.append(f"{request.gpu_hours:,.0f} device-hours as given")
    else:
        assert hardware is not None and request.params and request.tokens and request.devices  # checked in TrainRequest
        flops = training_flops(request.params, request.tokens, request.layers, request.d_model, request.seq_len)
        peak = hardware.peak_flops(request.precision)
        plan["flops"] = flops
        plan["flops_formula"] = "6·N·D + 12·L·d·T·D (PaLM appendix B)" if request.layers else "6·N·D"
        plan["peak_flops_per_device"] = peak
        mfus = {"central": request.mfu} if request.mfu else dict(zip(("low_mfu", "central", "high_mfu"), MFU_RANGE))
        scenarios = {
            k: _scenario(flops / (peak * m) / 3600.0, request.devices, power_w, facility, m) for k, m in mfus.items()
        }
        if request.mfu is None:
            assumptions.append(
                f"no --mfu given: a range over MFU {MFU_RANGE[0]}–{MFU_RANGE[2]} (central {MFU_RANGE[1]}); low MFU ="
                " more hours"
            )
        assumptions.append(f"peak {peak / 1e12:g} TFLOP/s per device ({request.precision}, dense) from the catalogue")
    carbon = facility.carbon
    assert carbon is not None
    plan.update(
        {
            "inputs": {
                k: getattr(request, k)
                for k in (
                    "params",
                    "tokens",
                    "hardware",
                    "devices",
                    "mfu",
                    "precision",
                    "layers",
                    "d_model",
                    "seq_len",
                    "gpu_hours",
                    "power_w",
                )
            },
            "power_w": power_w,
            "power_source": power_source,
            "facility": {
                "method": "cooling" if facility.cooling else "pue",
                "pue": facility.pue,
                "cop": facility.cooling.cop if facility.cooling else None,
            },
            "carbon": carbon.to_dict(),
            "currency": facility.currency if facility.price_per_kwh is not None else None,
            "scenarios": scenarios,
            "assumptions": assumptions,
        }
    )
    return plan
