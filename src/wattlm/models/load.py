"""Load a causal LM from a Hub id, a local directory, a `.gguf` file, or the embedded default.

Transformers does the loading (GGUF through its `gguf_file=` path, which de-quantizes to the dtype
asked for). What wattlm adds: resolving what the user typed, recording the *source format* (a GGUF's
quantization type, e.g. Q4_1, survives as the grid the weights sit on even after de-quantization),
and one-line errors for a missing path, a corrupt GGUF, or an unknown architecture.
Remote code runs only with `trust_remote_code=True`, which the CLI sets from `--trust-remote-code`.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidInputError
from .assets import DEFAULT_MODEL, fetch

DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what to call it in results
    kind: str  # "default", "gguf", "dir", "compressed" (a `wattlm compress` folder) or "hub"
    location: str  # hub id, directory, or the .gguf file
    source_format: str  # e.g. "gguf:Q4_1", "safetensors", "hub"


def gguf_format(path: Path) -> str:
    """The quantization a GGUF file declares (general.file_type), or its most common tensor type."""
    import struct

    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (OSError, ValueError, struct.error, IndexError, KeyError) as e:  # what the reader raises for a damaged file
        raise InvalidInputError(f"{path} is not a readable GGUF file ({e}); re-download or re-export it") from e
    field = reader.fields.get("general.file_type")
    if field is not None:
        file_type = int(field.parts[field.data[0]][0])
        try:
            return "gguf:" + gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    common = Counter(t.tensor_type.name for t in reader.tensors if t.name.endswith("weight")).most_common(1)
    return "gguf:" + (common[0][0] if common else "unknown")


def resolve_model(model: str | None, *, offline: bool = False) -> ModelSpec:
    """Work out what `--model` names. None means the embedded default (fetched on first use)."""
    if model is None:
        path = fetch(DEFAULT_MODEL, offline=offline)
        return ModelSpec("SmolLM2-135M-Instruct", "default", str(path), gguf_format(path))
    p = Path(model).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ConfigError(f"{{model}} {model}: no such GGUF file", field="model")
        return ModelSpec(p.stem, "gguf", str(p), gguf_format(p))
    if p.exists() or model.startswith((".", "/", "~")):
        if not p.exists():
            raise ConfigError(f"{{model}} {model}: no such file or folder", field="model")
        if not (p.is_dir() and (p / "config.json").is_file()):
            raise ConfigError(f"{{model}} {model}: not a model directory (it needs a config.json)", field="model")
        weights = "safetensors" if any(p.glob("*.safetensors")) else "pytorch-bin"
        compressed = _compression_names(p)
        if compressed:  # written by `wattlm compress`: loaded through wattlm.compress.load
            return ModelSpec(p.name, "compressed", str(p), "wattlm:" + "+".join(compressed))
        return ModelSpec(p.name, "dir", str(p), weights)
    return ModelSpec(model, "hub", model, "hub")


def _compression_names(folder: Path) -> list[str]:
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{folder}/config.json is not readable JSON ({e}); re-export the model") from e
    return [r.get("name", "?") for r in config.get("wattlm_compression") or []]


def resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "{device} cuda: no CUDA GPU is usable here (torch.cuda.is_available() is False); use {device} cpu",
            field="device",
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("{device} mps: Metal is not available here; use {device} cpu", field="device")
    return device


def torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise InvalidInputError(f"dtype {name!r} is not one of {', '.join(DTYPES)}")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def load_model(
    spec: ModelSpec, *, dtype: str = "fp32", device: str = "cpu", trust_remote_code: bool = False, offline: bool = False
) -> tuple[Any, Any]:
    """Load (model, tokenizer) in eval mode on `device`."""
    from pickle import UnpicklingError

    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    location = spec.location
    if spec.kind in ("gguf", "default"):
        location, kwargs["gguf_file"] = str(Path(spec.location).parent), Path(spec.location).name
    if offline or spec.kind != "hub":
        kwargs["local_files_only"] = True
    # Warnings that loading prints (transformers' logger, Python warnings) are held back until it
    # succeeds, so a failed load ends on wattlm's one error line alone.
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype(dtype), **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, UnpicklingError) as e:
        if _refused_pickle(e):
            raise InvalidInputError(
                f"{spec.location}: its weights are a pickle file (pytorch_model.bin) that holds more than tensors, and"
                " unpickling it may run code, so wattlm does not load it; convert it to safetensors"
                " (https://huggingface.co/spaces/safetensors/convert) or re-save it with"
                " save_pretrained(safe_serialization=True)"
            ) from e
        # Damaged weights surface as SafetensorError (safetensors), UnpicklingError or RuntimeError
        # (torch's zip reader); a missing or unknown model as OSError/ValueError/KeyError.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidInputError(f"could not load {spec.name!r} as a causal LM: {first}") from e
    finally:
        hf_logging.set_verbosity(level)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    model.eval()
    return model.to(device), tokenizer


def _refused_pickle(error: BaseException) -> bool:
    """True when torch.load(weights_only=True) refused a pickle for holding more than tensors."""
    from pickle import UnpicklingError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, UnpicklingError) and "weights_only" in str(seen).replace(" ", "_").lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def save_plain(model: Any, folder: Path, tokenizer: Any = None, state_dict: dict[str, Any] | None = None) -> None:
    """Weights as safetensors plus config.json (and the tokenizer) in `folder`, which
    `from_pretrained` loads. Not `save_pretrained`: transformers refuses to save a model it loaded
    from GGUF (it still counts as quantized), though its tensors are plain floats. `state_dict`:
    the whole weights when the model itself holds only a shard (FSDP)."""
    import json

    from safetensors.torch import save_file, save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    # As save_pretrained writes it; converters (e.g. onnxruntime-genai's builder) pick the model class by it.
    config["architectures"] = config.get("architectures") or [type(model).__name__]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if state_dict is not None:  # clones: tied weights share one storage, which save_file refuses
        save_file(
            {k: v.detach().clone().contiguous() for k, v in state_dict.items()}, str(folder / "model.safetensors")
        )
    else:
        save_model(model, str(folder / "model.safetensors"))  # drops the copy of tied tensors
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
