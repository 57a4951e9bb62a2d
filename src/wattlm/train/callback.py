"""`WattlmCallback`: energy per step and per epoch for a Hugging Face `Trainer`, in a wattlm run folder.

    trainer = Trainer(model, args, train_dataset=..., callbacks=[WattlmCallback("runs/ft")])

Writes the same records as `wattlm train` (kind "train" run; "step", "epoch", "summary" lines).
Tokens come from `state.num_input_tokens_seen`, which the Trainer counts only with
`TrainingArguments(include_num_input_tokens_seen=True)` (without it, J/token is left empty and the
callback says so). The Trainer reports the loss in `on_log`, averaged over `logging_steps`, after
`on_step_end`: a step's record is written once its loss is known (`loss_steps` says over how many
steps it was averaged). Under torch.distributed every rank meters what it owns (wattlm.ranks) and
rank 0 adds them up.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .. import ranks
from ..energy.meter import EnergyMeter
from ..energy.sources.base import worst_provenance
from ..results import RunDir


def _gathered(m: Any) -> tuple[float, str]:
    """A window's energy summed over the ranks and the least trustworthy of their provenances."""
    parts = ranks.gather((m.it_energy_j, m.provenance), _dist())
    return float(sum(e for e, _ in parts)), worst_provenance(p for _, p in parts)


def _dist() -> ranks.Dist:
    """The process group the Trainer set up (one process when there is none)."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        return ranks.Dist(td.get_rank(), td.get_world_size())
    return ranks.Dist()


class WattlmCallback(TrainerCallback):
    """Meters a `Trainer` run; `out` is a new run folder (default runs/<time>-trainer)."""

    def __init__(self, out: str | Path | None = None, *, meter: EnergyMeter | None = None, sources: Any = None) -> None:
        self.out = Path(out) if out is not None else None
        self._meter, self._sources = meter, sources
        self.run: RunDir | None = None
        self.warnings: list[str] = []
        self._pending: dict[str, Any] | None = None
        self._tokens_before = 0
        self._epoch_tokens_before = 0
        self._epoch_energy = 0.0
        self._last_log_step = 0
        self.steps: list[dict[str, Any]] = []

    @property
    def meter(self) -> EnergyMeter:
        """The meter (made when training begins)."""
        if self._meter is None:
            raise RuntimeError("WattlmCallback: the Trainer has not called on_train_begin yet")
        return self._meter

    # -- Trainer events ----------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from datetime import datetime

        from ..environment import environment

        dist = ranks.from_env()
        if self._meter is None:
            if self._sources is None:
                from ..energy.discover import discover

                self._sources = discover().sources
            self._meter = EnergyMeter(ranks.rank_sources(tuple(self._sources), dist))
        if not getattr(args, "include_num_input_tokens_seen", False):
            self.warnings.append(
                "set TrainingArguments(include_num_input_tokens_seen=True) to get J per token; only J per step is"
                " recorded"
            )
        if state.is_world_process_zero:
            import torch

            path = self.out or Path("runs") / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-trainer"
            info = {
                "trainer": {
                    k: getattr(args, k, None)
                    for k in (
                        "per_device_train_batch_size",
                        "gradient_accumulation_steps",
                        "learning_rate",
                        "num_train_epochs",
                        "max_steps",
                        "bf16",
                        "fp16",
                        "logging_steps",
                    )
                },
                "model": {"name": type(kwargs.get("model")).__name__ if kwargs.get("model") is not None else None},
                "data": {"world_size": dist.world},
                "environment": environment(torch.device(getattr(args, "device", "cpu"))),
                "energy_sources": sorted({c.source for s in self._meter.sources for c in s.channels()}),
                "warnings": self.warnings,
            }
            self.run = RunDir.create(path, "train", info)
        self._meter.begin_window("train")

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._epoch_tokens_before = state.num_input_tokens_seen
        self._epoch_energy = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush()
        self._tokens_before = state.num_input_tokens_seen
        self.meter.begin_window("step")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        m = self.meter.end_window("step")
        energy, provenance = _gathered(m)
        tokens = state.num_input_tokens_seen - self._tokens_before or None
        self._epoch_energy += energy
        self._pending = {
            "kind": "step",
            "step": state.global_step,
            "epoch": state.epoch,
            "loss": None,
            "tokens": tokens,
            "energy_j": energy,
            "j_per_token": energy / tokens if tokens else None,
            "provenance": provenance,
            "duration_s": m.duration_s,
        }

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if self._pending is not None and logs and "loss" in logs:
            self._pending["loss"] = logs["loss"]
            self._pending["loss_steps"] = state.global_step - self._last_log_step
            self._last_log_step = state.global_step
        self._flush()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush()
        tokens = state.num_input_tokens_seen - self._epoch_tokens_before or None
        self._write(
            {
                "kind": "epoch",
                "epoch": math.ceil(state.epoch) - 1,
                "energy_j": self._epoch_energy,
                "tokens": tokens,
                "j_per_token": self._epoch_energy / tokens if tokens else None,
            }
        )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush()
        m = self.meter.end_window("train")
        energy, provenance = _gathered(m)
        tokens = state.num_input_tokens_seen or None
        self._write(
            {
                "kind": "summary",
                "steps": state.global_step,
                "tokens": tokens,
                "run_it_energy_j": energy,
                "energy_j": sum(s["energy_j"] for s in self.steps),
                "j_per_token": energy / tokens if tokens else None,
                "provenance": provenance,
                "wall_s": m.duration_s,
                "warnings": self.warnings,
            }
        )
        self.meter.close()

    # -- writing -----------------------------------------------------------------------------

    def _flush(self) -> None:
        if self._pending is not None:
            self.steps.append(self._pending)
            self._write(self._pending)
            self._pending = None

    def _write(self, record: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.append(record)
