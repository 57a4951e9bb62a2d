"""REDUCE: quantization, pruning and parameter sharing of Hugging Face causal LMs, in place, saved
without pickle.

    from wattlm.compress import compress_, GPTQConfig, PruneConfig, save, load
    compress_(model, PruneConfig(method="wanda", sparsity=0.5), calibration=ids)   # ids: [samples, seq_len]
    compress_(model, GPTQConfig(bits=4, group_size=64), calibration=ids)
    save(model, "out/wanda50-gptq4", tokenizer); model, tokenizer = load("out/wanda50-gptq4")
"""

from .config import (
    CompressConfig,
    FP8Config,
    GPTQConfig,
    Int4WeightConfig,
    Int8WeightConfig,
    PruneConfig,
    QuantConfig,
    ShareConfig,
    StructuredConfig,
    W8A8Config,
    config_from_dict,
    config_from_name,
)
from .registry import compress_
from .store import is_compressed, load, save

__all__ = [
    "CompressConfig",
    "FP8Config",
    "GPTQConfig",
    "Int4WeightConfig",
    "Int8WeightConfig",
    "PruneConfig",
    "QuantConfig",
    "ShareConfig",
    "StructuredConfig",
    "W8A8Config",
    "compress_",
    "config_from_dict",
    "config_from_name",
    "is_compressed",
    "load",
    "save",
]
