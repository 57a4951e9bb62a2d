"""BUILD: a variant spec (`fp32`, `bf16+compile`, `wanda50+int8`, `gguf-gptq-iq4_nl-mix95`) → a built
model, used alike by `wattlm bench` (which scores variants), `wattlm serve` (which serves one) and
`wattlm export`; built llama.cpp files are kept in a cache (cache.py)."""

from .spec import Variant, register, resolve, resolve_all, with_engine
from .step import Context, Step

__all__ = ["Context", "Step", "Variant", "register", "resolve", "resolve_all", "with_engine"]
