"""Save a compressed model to a folder and load it back to bit-identical outputs. No pickle.

    folder/config.json        the model's config + `wattlm_compression` (what was done, per module)
    folder/model.safetensors  every tensor as stored (int8, packed int4 nibbles, fp8, float scales)
    folder/tokenizer*         the tokenizer, when given

Pruned models (unstructured zeros, or structurally smaller) are ordinary models: their folder loads
with `AutoModelForCausalLM.from_pretrained` as well. Quantized layers and layers sharing weights are
not: there the config's `model_type` is renamed (kept as `wattlm_model_type`), so transformers stops
with "unrecognized model type wattlm-quantized" instead of loading random weights, with a warning
only, into the layers it does not know (what it does with an unknown `quant_method`, or with tensors
saved once for several layers). `wattlm.compress.load` (and `wattlm bench --model folder`) rebuilds
them. The folder is written under a temporary name and renamed at the end, so an interrupted save
leaves no half-written model behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..fileio import atomic_folder, check_new_folder

MARKER = "wattlm_compression"
GUARD_TYPE = "wattlm-quantized"  # config.json's model_type: not one transformers can load by mistake


def is_compressed(folder: str | Path) -> bool:
    config = Path(folder) / "config.json"
    try:
        return config.is_file() and MARKER in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


def check_out(folder: Path) -> None:
    """Fail before any work if `folder` exists with content, or cannot be created."""
    check_new_folder(folder, "choose another {out} or delete it")


def needs_wattlm(records: list[dict[str, Any]]) -> bool:
    """Only wattlm can rebuild quantized layers (records with modules) and shared weights."""
    return any(r.get("modules") or r.get("config", {}).get("technique") == "share" for r in records)


def save(model: Any, folder: str | Path, tokenizer: Any = None) -> Path:
    """Write `model` (quantized by `compress_`) and its tokenizer to `folder`, atomically."""
    folder = Path(folder)
    check_out(folder)
    if not getattr(model.config, MARKER, None):
        raise InvalidInputError("this model was not compressed by wattlm; use model.save_pretrained(folder)")
    with atomic_folder(folder) as tmp:  # an existing `folder` is empty (checked above)
        write(model, tmp, tokenizer)
    return folder


def write(model: Any, folder: Path, tokenizer: Any = None) -> None:
    """The files of a compressed model, into the (new, empty) `folder`; `save` makes it atomic."""
    from safetensors.torch import save_model

    records = getattr(model.config, MARKER, None)
    config = model.config.to_dict()
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    if needs_wattlm(records or []):
        config["wattlm_model_type"], config["model_type"] = config["model_type"], GUARD_TYPE
    config["wattlm_dtype"] = str(dtype).removeprefix("torch.")
    # Buffers outside the state dict (rotary inv_freq) are rebuilt at load; keep their dtype, so
    # a model cast to bf16 after creation reloads bit-identically.
    persistent = set(model.state_dict())
    config["wattlm_buffer_dtypes"] = {
        n: str(b.dtype).removeprefix("torch.") for n, b in model.named_buffers() if n not in persistent
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_model(model, str(folder / "model.safetensors"))  # drops duplicate names of tied tensors
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))


def load(folder: str | Path, device: Any = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer or None) from a folder written by `save`."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .qlinear import MODULES
    from .registry import set_module

    folder = Path(folder)
    if not is_compressed(folder):
        raise InvalidInputError(f"{folder} holds no wattlm-compressed model (no {MARKER} in config.json)")
    raw = json.loads((folder / "config.json").read_text())
    settings = {k: v for k, v in raw.items() if k not in ("model_type", "wattlm_model_type")}
    try:
        config = AutoConfig.for_model(raw.get("wattlm_model_type", raw.get("model_type")), **settings)
    except (KeyError, ValueError) as e:
        raise InvalidInputError(
            f"{folder}/config.json does not describe a model transformers knows ({e}); re-run wattlm compress"
        ) from e
    dtype = getattr(torch, raw.get("wattlm_dtype", "float32"))
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for record in raw[MARKER]:  # replayed in order: sharing before a quantization of the shared layers
        if record.get("config", {}).get("technique") == "share":
            from .share import tie_

            tie_(model, record["details"]["groups"], record["details"]["shared"])
        for name, spec in record.get("modules", {}).items():
            try:
                old = model.get_submodule(name)
            except AttributeError as e:
                raise InvalidInputError(
                    f"{folder}: config.json names a layer {name} the model does not have; the folder is damaged"
                ) from e
            cls = MODULES[spec["scheme"]]
            kwargs = {"group_size": spec["group_size"]} if spec["scheme"] == "int4" else {}
            bias = getattr(old, "bias", None) is not None
            set_module(model, name, cls(old.in_features, old.out_features, bias, **kwargs))
    try:
        load_model(model, str(folder / "model.safetensors"), strict=True)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise InvalidInputError(
            f"{folder}/model.safetensors cannot be read into the model ({str(e).splitlines()[0]}); re-run wattlm"
            " compress"
        ) from e
    for name, dtype_name in raw.get("wattlm_buffer_dtypes", {}).items():
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        module._buffers[leaf] = module._buffers[leaf].to(getattr(torch, dtype_name))
    tokenizer = None
    if any(folder.glob("tokenizer*")):
        # The config is given so the tokenizer does not read config.json and warn about its model_type.
        tokenizer = AutoTokenizer.from_pretrained(str(folder), config=config, local_files_only=True)
    return model.to(device).eval(), tokenizer
