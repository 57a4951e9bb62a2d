import pytest

from wattlm.energy.facility import CoolingModel, Facility, resolve_carbon
from wattlm.errors import InvalidInputError


def test_pue_scales_it_energy_and_carbon_and_cost():
    f = Facility(pue=1.5, carbon=resolve_carbon("FR"), price_per_kwh=0.2, currency="EUR")
    r = f.apply(3_600_000.0)  # 1 kWh of IT energy
    assert r.facility_energy_j == pytest.approx(5_400_000.0)
    assert r.cooling_energy_j == pytest.approx(1_800_000.0)
    assert r.co2e_g == pytest.approx(1.5 * 56)
    assert r.cost == pytest.approx(0.3)
    assert r.method == "pue" and r.pue == pytest.approx(1.5)


def test_cooling_model_uses_carnot_cop_in_kelvin():
    c = CoolingModel(t_cold_c=20.0, t_hot_c=35.0, efficiency=0.5)
    assert c.cop == pytest.approx(0.5 * 293.15 / 15.0)
    r = Facility(cooling=c, carbon=resolve_carbon(intensity_g_per_kwh=100)).apply(1000.0)
    assert r.cooling_energy_j == pytest.approx(1000.0 / c.cop)
    assert r.pue == pytest.approx(1 + 1 / c.cop)
    assert CoolingModel.parse("18,30") == CoolingModel(18.0, 30.0, 0.5)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: Facility(pue=0.9), "PUE must be ≥ 1.0"),
        (lambda: Facility(price_per_kwh=-1), "price per kWh must be ≥ 0"),
        (lambda: CoolingModel(30, 20), "must be above cold 30 °C"),
        (lambda: CoolingModel(20, 35, 1.5), "efficiency η must be in (0, 1]"),
        (lambda: CoolingModel.parse("hot"), "expected T_COLD,T_HOT[,ETA]"),
        (lambda: resolve_carbon("Atlantis"), "unknown region 'Atlantis'"),
        (lambda: resolve_carbon(intensity_g_per_kwh=-5), "carbon intensity must be ≥ 0"),
        (lambda: Facility(pue=1.2, cooling=CoolingModel()), "not both"),
    ],
)
def test_bad_values_are_rejected_with_a_message(make, words):
    with pytest.raises(InvalidInputError) as e:
        make()
    assert words in str(e.value)


def test_default_region_is_stated():
    c = Facility().carbon
    assert c.region == "WORLD" and c.defaulted
    assert not resolve_carbon("fr").defaulted  # case-insensitive
    assert resolve_carbon("FR").g_per_kwh == 56
