"""Bench steps for the quantization schemes: `int8`, `w8a8`, `w8a8-smooth`, `int4-g<G>[-asym]`,
`gptq<bits>-g<G>[-asym]`, `fp8` — each one `compress_` call with the config its name describes."""

from __future__ import annotations

from typing import Any

from ..compress.config import NAME_PATTERNS, config_from_name
from .variants import Context, Step, register


def _step(name: str) -> Step:
    config = config_from_name(name)  # validates the name's numbers (group size, bits) at resolve time

    def apply(model: Any, context: Context) -> Any:
        from ..compress.registry import compress_

        compress_(model, config, calibration=context.calibration if config.calibrated else None)
        return model

    def preflight(device: Any) -> str | None:
        from ..compress.registry import check_device

        return check_device(config, device).warning()  # raises where the scheme cannot run at all (fp8 on CPU)

    return Step(name, apply, doc=config.__doc__ or "", calibrated=config.calibrated, preflight=preflight)


for _pattern, _ in NAME_PATTERNS:
    register(_pattern, lambda match: _step(match[0]), pattern=True)
