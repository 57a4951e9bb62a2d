"""REDUCE: quantization (and, later, pruning) of Hugging Face causal LMs, in place, saved without pickle.

    from wattlm.compress import compress_, GPTQConfig, save, load
    compress_(model, GPTQConfig(bits=4, group_size=64), calibration=ids)   # ids: [samples, seq_len]
    save(model, "out/gptq4", tokenizer); model, tokenizer = load("out/gptq4")
"""

from .config import (
    FP8Config,
    GPTQConfig,
    Int4WeightConfig,
    Int8WeightConfig,
    QuantConfig,
    W8A8Config,
    config_from_dict,
    config_from_name,
)
from .registry import compress_
from .store import is_compressed, load, save

__all__ = [
    "FP8Config",
    "GPTQConfig",
    "Int4WeightConfig",
    "Int8WeightConfig",
    "QuantConfig",
    "W8A8Config",
    "compress_",
    "config_from_dict",
    "config_from_name",
    "is_compressed",
    "load",
    "save",
]
