"""A scripted energy source registered through the real EnergySource interface."""

from __future__ import annotations

import threading
import time

from wattlm.energy.sources.base import Channel, EnergySource, Reading


class ScriptedSource(EnergySource):
    """Energy grows as the test says: `advance(joules)`; `fail_next()` makes one read fail."""

    def __init__(
        self, key="fake:gpu0", domain="gpu", provenance="counter", update_period_s=0.0, max_read_interval_s=None
    ):
        self.name = "fake"
        self.update_period_s = update_period_s
        self.max_read_interval_s = max_read_interval_s
        self._channel = Channel(key=key, domain=domain, label=f"fake {domain}", source="fake", provenance=provenance)
        self.energy_j = 0.0
        self.gaps = 0
        self.reads = 0
        self.opened = 0
        self._fail = False
        self._read = threading.Condition()

    def channels(self):
        return (self._channel,)

    def open(self):
        self.opened += 1
        self.energy_j = 0.0

    def advance(self, joules: float) -> None:
        self.energy_j += joules

    def fail_next(self) -> None:
        self._fail = True

    def wait_reads(self, count: int, timeout_s: float = 30.0) -> bool:
        """Block until the source has been read `count` times in all (by the meter's sampler): no sleeps."""
        with self._read:
            return self._read.wait_for(lambda: self.reads >= count, timeout_s)

    def read(self):
        with self._read:
            self.reads += 1
            self._read.notify_all()
        if self._fail:
            self._fail = False
            self.gaps += 1
        return {self._channel.key: Reading(self.energy_j, self.gaps)}


WATTS = 100.0


class ConstantPower(EnergySource):
    """A counter that advances at WATTS with real time."""

    name = "constant"

    def channels(self):
        return (Channel("const:gpu0", "gpu", "constant 100 W", "constant", "counter"),)

    def open(self):
        self.t0 = time.monotonic()

    def read(self):
        return {"const:gpu0": Reading(WATTS * (time.monotonic() - self.t0))}
