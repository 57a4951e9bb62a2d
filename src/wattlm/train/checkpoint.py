"""Checkpoints that a crash cannot half-write, and that resume a run exactly.

    <run>/checkpoints/step-000040/model.safetensors   weights (tied tensors stored once)
                                  /optimizer.pt        optimizer + gradient scaler state, torch RNG
                                  /state.json          step, epoch, config
    <run>/checkpoints/latest                           name of the newest complete checkpoint

With FSDP the shards are gathered into the same whole-model files, so a checkpoint does not depend
on how the model was sharded. A checkpoint is written into a temporary folder and renamed; only
then does `latest` (written atomically) point at it, and older checkpoints are removed. The data
order depends only on the step (see data.batch_rows), so weights + optimizer state + step are all a resumed run needs.
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


def _full_state(model: Any, optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Whole (unsharded) model and optimizer state of an FSDP model, on CPU; a collective: every
    rank calls it, rank 0 gets the tensors."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def save(
    run_path: Path | None,
    step: int,
    model: Any,
    optimizer: Any,
    scaler: Any,
    state: dict[str, Any],
    *,
    fsdp: bool = False,
) -> Path | None:
    """Write a checkpoint (rank 0 passes its run folder, other ranks None; with FSDP every rank must
    call, to gather the shards)."""
    import torch
    from safetensors.torch import save_file, save_model

    full = _full_state(model, optimizer) if fsdp else None
    if run_path is None:
        return None
    root = run_path / FOLDER
    name = f"step-{step:07d}"
    with atomic_folder(root / name) as tmp:
        if full is not None:
            # clones: tied weights come back as one storage under two names, which save_file refuses
            save_file({k: v.detach().clone().contiguous() for k, v in full[0].items()}, str(tmp / "model.safetensors"))
        else:
            save_model(model, str(tmp / "model.safetensors"))
        extra = {
            "optimizer": full[1] if full is not None else optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "fsdp": fsdp,
        }
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


def load_weights(folder: Path, model: Any) -> dict[str, Any]:
    """Weights from `folder` into the (unwrapped, unsharded) model; returns its state.json."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        load_model(model, str(folder / "model.safetensors"), strict=True)
        return json.loads((folder / "state.json").read_text())
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise InvalidInputError(
            f"checkpoint {folder} cannot be read ({str(e).splitlines()[0]}); it is damaged or from another model"
        ) from e


def load_optimizer(folder: Path, model: Any, optimizer: Any, scaler: Any, *, fsdp: bool = False) -> None:
    """Optimizer, gradient scaler and RNG state (after the model is wrapped and the optimizer made)."""
    import torch

    try:
        extra = torch.load(folder / "optimizer.pt", weights_only=True)
    except (OSError, RuntimeError, ValueError) as e:
        raise InvalidInputError(
            f"checkpoint {folder}/optimizer.pt cannot be read ({str(e).splitlines()[0]}); it is damaged"
        ) from e
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(
            model, optimizer, optim_state_dict=extra["optimizer"], options=StateDictOptions(full_state_dict=True)
        )
    else:
        optimizer.load_state_dict(extra["optimizer"])
    if scaler is not None and "scaler" in extra:
        scaler.load_state_dict(extra["scaler"])
    torch.set_rng_state(extra["rng"])
