"""From IT energy to facility energy, carbon and cost: compute energy plus cooling energy.

Two ways to account for cooling and other facility overhead:

* PUE: facility energy = IT energy × PUE. The default PUE 1.0 means "IT energy only", and the
  output says so.
* A cooling model: the heat the IT equipment gives off (equal to its energy) is pumped out by a
  chiller whose coefficient of performance is a fraction η of the Carnot limit,
      COP = η · T_cold / (T_hot − T_cold)     (temperatures in kelvin)
      cooling energy = IT energy / COP
  (A formula of the form H·Tc·(Tmax−Tmin) is not dimensionally an energy; the COP is.)
  Example: supply air 20 °C, heat rejected at 35 °C, η = 0.5 → COP ≈ 9.8 → +10 % energy.

Carbon: g CO2e = facility kWh × grid intensity (data/carbon_intensity.csv, or a given figure).
Cost: facility kWh × price per kWh.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

from ..errors import ConfigError, InvalidInputError
from ..units import j_to_kwh

DEFAULT_REGION = "WORLD"
_KELVIN = 273.15


@dataclass(frozen=True)
class CoolingModel:
    t_cold_c: float = 20.0  # temperature of the cooled space (supply air / coolant), °C
    t_hot_c: float = 35.0  # temperature heat is rejected at, °C
    efficiency: float = 0.5  # η: achieved fraction of the Carnot COP

    def __post_init__(self) -> None:
        if not self.t_hot_c > self.t_cold_c:
            raise InvalidInputError(
                f"cooling model: hot temperature {self.t_hot_c} °C must be above cold {self.t_cold_c} °C"
            )
        if self.t_cold_c <= -_KELVIN:
            raise InvalidInputError(f"cooling model: {self.t_cold_c} °C is below absolute zero")
        if not 0.0 < self.efficiency <= 1.0:
            raise InvalidInputError(f"cooling model: efficiency η must be in (0, 1], got {self.efficiency}")

    @property
    def cop(self) -> float:
        t_cold_k = self.t_cold_c + _KELVIN
        return self.efficiency * t_cold_k / (self.t_hot_c - self.t_cold_c)

    @classmethod
    def parse(cls, text: str) -> CoolingModel:
        """From 'T_COLD,T_HOT[,ETA]' in °C, e.g. '20,35,0.5'."""
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) not in (2, 3):
            raise ConfigError(
                f"{{cooling}} {text!r}: expected T_COLD,T_HOT[,ETA] in °C, e.g. 20,35,0.5", field="cooling"
            )
        return cls(*values)


@dataclass(frozen=True)
class CarbonIntensity:
    region: str
    g_per_kwh: float
    year: int | None
    source: str
    defaulted: bool  # True when the user named no region and the default was used

    def to_dict(self) -> dict:
        return {
            "region": self.region,
            "g_per_kwh": self.g_per_kwh,
            "year": self.year,
            "source": self.source,
            "defaulted": self.defaulted,
        }


def carbon_table() -> dict[str, CarbonIntensity]:
    text = resources.files("wattlm.energy").joinpath("data/carbon_intensity.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {
        r["region"]: CarbonIntensity(r["region"], float(r["g_per_kwh"]), int(r["year"]), r["source"], False)
        for r in rows
    }


def resolve_carbon(region: str | None = None, intensity_g_per_kwh: float | None = None) -> CarbonIntensity:
    """The grid intensity to use: an explicit figure, a named region, or the stated default."""
    if intensity_g_per_kwh is not None:
        if intensity_g_per_kwh < 0:
            raise InvalidInputError(f"carbon intensity must be ≥ 0 g/kWh, got {intensity_g_per_kwh}")
        return CarbonIntensity(region or "custom", intensity_g_per_kwh, None, "given by the user", False)
    table = carbon_table()
    if region is None:
        row = table[DEFAULT_REGION]
        return CarbonIntensity(row.region, row.g_per_kwh, row.year, row.source, defaulted=True)
    found = table.get(region.upper())
    if found is None:
        known = ", ".join(sorted(table))
        raise ConfigError(
            f"unknown region {region!r}: use one of {known}, or give {{intensity}} G_PER_KWH", field="intensity"
        )
    return found


@dataclass(frozen=True)
class FacilityResult:
    it_energy_j: float
    facility_energy_j: float
    cooling_energy_j: float
    method: str  # "pue" or "cooling"
    pue: float  # effective PUE (facility / IT)
    cop: float | None
    co2e_g: float
    carbon: CarbonIntensity
    cost: float | None
    currency: str


@dataclass(frozen=True)
class Facility:
    """How IT energy becomes facility energy, CO2e and cost."""

    pue: float = 1.0
    cooling: CoolingModel | None = None
    carbon: CarbonIntensity | None = None  # None: the default region, stated as such
    price_per_kwh: float | None = None
    currency: str = "USD"

    def __post_init__(self) -> None:
        if not self.pue >= 1.0:
            raise InvalidInputError(f"PUE must be ≥ 1.0 (1.0 = IT energy only), got {self.pue}")
        if self.cooling is not None and self.pue != 1.0:
            raise InvalidInputError("give either a PUE or a cooling model, not both")
        if self.price_per_kwh is not None and self.price_per_kwh < 0:
            raise InvalidInputError(f"price per kWh must be ≥ 0, got {self.price_per_kwh}")
        if self.carbon is None:
            object.__setattr__(self, "carbon", resolve_carbon())

    def apply(self, it_energy_j: float) -> FacilityResult:
        if self.cooling is not None:
            cop = self.cooling.cop
            cooling_j = it_energy_j / cop
            method = "cooling"
        else:
            cop = None
            cooling_j = it_energy_j * (self.pue - 1.0)
            method = "pue"
        facility_j = it_energy_j + cooling_j
        kwh = j_to_kwh(facility_j)
        assert self.carbon is not None  # set in __post_init__
        return FacilityResult(
            it_energy_j=it_energy_j,
            facility_energy_j=facility_j,
            cooling_energy_j=cooling_j,
            method=method,
            pue=facility_j / it_energy_j if it_energy_j > 0 else (1.0 + 1.0 / cop if cop else self.pue),
            cop=cop,
            co2e_g=kwh * self.carbon.g_per_kwh,
            carbon=self.carbon,
            cost=None if self.price_per_kwh is None else kwh * self.price_per_kwh,
            currency=self.currency,
        )


def facility_from_options(
    pue: float = 1.0,
    cooling: str | None = None,
    region: str | None = None,
    intensity_g_per_kwh: float | None = None,
    price_per_kwh: float | None = None,
    currency: str = "USD",
) -> Facility:
    """The Facility that PUE or cooling (T_COLD,T_HOT[,ETA]), region or intensity, and price describe."""
    return Facility(
        pue=pue,
        cooling=CoolingModel.parse(cooling) if cooling else None,
        carbon=None if region is None and intensity_g_per_kwh is None else resolve_carbon(region, intensity_g_per_kwh),
        price_per_kwh=price_per_kwh,
        currency=currency,
    )
