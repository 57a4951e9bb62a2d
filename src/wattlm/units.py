"""The one place where energy, power and time units are converted.

Everything inside wattlm is joules, watts and seconds; vendor units (µJ, mJ, mW, µW) are
converted here at the boundary, and kWh / Wh only for display and carbon arithmetic.
"""

J_PER_WH = 3600.0
J_PER_KWH = 3_600_000.0


def uj_to_j(energy_uj: float) -> float:
    return energy_uj / 1e6


def mj_to_j(energy_mj: float) -> float:
    return energy_mj / 1e3


def mw_to_w(power_mw: float) -> float:
    return power_mw / 1e3


def uw_to_w(power_uw: float) -> float:
    return power_uw / 1e6


def j_to_wh(energy_j: float) -> float:
    return energy_j / J_PER_WH


def j_to_kwh(energy_j: float) -> float:
    return energy_j / J_PER_KWH


def kwh_to_j(energy_kwh: float) -> float:
    return energy_kwh * J_PER_KWH


def counter_delta(previous: int, current: int, modulus: int | None) -> int | None:
    """Increase of a wrapping hardware counter between two reads.

    The counter counts up and wraps to 0 after `modulus - 1`. Reads must be close enough in
    time that at most one wrap passes between them; the caller guarantees that by polling.

    Args:
        previous: earlier raw value.
        current: later raw value.
        modulus: number of distinct counter values (e.g. max_energy_range_uj + 1), or None
            when it is unknown.

    Returns:
        The increase, or None when the counter went backwards and the modulus is unknown:
        such a reading must be dropped, never reported as a negative energy.
    """
    if current >= previous:
        return current - previous
    if modulus is None:
        return None
    return current + modulus - previous
