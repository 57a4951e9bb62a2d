import math

from hypothesis import given
from hypothesis import strategies as st

from wattlm.units import counter_delta, j_to_kwh, kwh_to_j, mj_to_j, uj_to_j


@given(st.floats(min_value=0, max_value=1e15, allow_nan=False))
def test_kwh_round_trip(energy_j):
    assert abs(kwh_to_j(j_to_kwh(energy_j)) - energy_j) <= 1e-9 * max(1.0, energy_j)


@given(st.integers(min_value=0, max_value=2**53))
def test_vendor_units_agree(raw_mj):
    assert math.isclose(uj_to_j(raw_mj * 1000), mj_to_j(raw_mj), rel_tol=1e-12)


@given(st.data())
def test_counter_delta_recovers_any_increase_below_one_range(data):
    modulus = data.draw(st.integers(min_value=2, max_value=2**64))
    previous = data.draw(st.integers(min_value=0, max_value=modulus - 1))
    increase = data.draw(st.integers(min_value=0, max_value=modulus - 1))
    current = (previous + increase) % modulus
    assert counter_delta(previous, current, modulus) == increase


@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=0, max_value=2**40))
def test_counter_delta_never_negative_without_modulus(previous, current):
    delta = counter_delta(previous, current, None)
    if current >= previous:
        assert delta == current - previous
    else:
        assert delta is None
