"""Checkpoints that a crash cannot half-write, and that resume a run exactly.

    <run>/checkpoints/step-000040/model.safetensors   weights (tied tensors stored once)
                                  /optimizer.pt        optimizer + gradient scaler state, torch RNG
                                  /state.json          step, epoch, config
    <run>/checkpoints/latest                           name of the newest complete checkpoint

A checkpoint is written into a temporary folder and renamed; only then does `latest` (written
atomically) point at it, and older checkpoints are removed. The data order depends only on the step
(see data.batch_rows), so weights + optimizer state + step are all a resumed run needs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..fileio import atomic_folder, atomic_write_text

FOLDER = "checkpoints"
LATEST = "latest"


def save(run_path: Path, step: int, model: Any, optimizer: Any, scaler: Any, state: dict[str, Any]) -> Path:
    import torch
    from safetensors.torch import save_model

    root = run_path / FOLDER
    name = f"step-{step:07d}"
    with atomic_folder(root / name) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        extra = {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}
        if scaler is not None:
            extra["scaler"] = scaler.state_dict()
        torch.save(extra, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    atomic_write_text(root / LATEST, name + "\n")
    for old in root.iterdir():
        if old.is_dir() and old.name.startswith("step-") and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return root / name


def latest(run_path: Path) -> Path | None:
    pointer = run_path / FOLDER / LATEST
    if not pointer.is_file():
        return None
    folder = run_path / FOLDER / pointer.read_text().strip()
    if not (folder / "state.json").is_file():
        raise InvalidInputError(f"{pointer} names {folder.name}, which is missing or incomplete; the run cannot resume")
    return folder


def load(folder: Path, model: Any, optimizer: Any, scaler: Any) -> dict[str, Any]:
    """Restore weights, optimizer, scaler and RNG from `folder`; returns its state.json."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        load_model(model, str(folder / "model.safetensors"), strict=True)
        extra = torch.load(folder / "optimizer.pt", weights_only=True)
        state = json.loads((folder / "state.json").read_text())
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise InvalidInputError(f"checkpoint {folder} cannot be read ({str(e).splitlines()[0]}); it is damaged or from another model") from e
    optimizer.load_state_dict(extra["optimizer"])
    if scaler is not None and "scaler" in extra:
        scaler.load_state_dict(extra["scaler"])
    torch.set_rng_state(extra["rng"])
    return state
