"""TRAIN: fine-tuning with every step metered — mixed precision, distillation, QAT, pruning
recovery, DDP / local SGD / FSDP under torchrun, packing, duplicate removal, exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TrainConfig

__all__ = ["TrainConfig", "WattlmCallback", "run_train"]


def __getattr__(name: str) -> Any:
    if name == "WattlmCallback":  # imports transformers: only when asked for
        from .callback import WattlmCallback

        return WattlmCallback
    raise AttributeError(f"module 'wattlm.train' has no attribute {name!r}")


def run_train(
    config: TrainConfig, out: str | Path | None = None, resume: str | Path | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Train as `config` says, writing the run folder `out` (or continuing `resume`); returns the summary."""
    from .loop import Trainer

    return Trainer(config, **kwargs).run(Path(out) if out else None, Path(resume) if resume else None)
