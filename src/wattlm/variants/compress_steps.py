"""Bench steps for compression: quantization (`int8`, `w8a8-smooth`, `int4-g<G>`, `gptq4-g<G>`, `fp8`, ...),
pruning (`wanda50`, `sparsegpt-2:4`, `struct25`, ...) and sharing (`share2`) — each one `compress_` call
with the config its name describes — and `recover<steps>`, short fine-tuning with pruned weights held
at zero (`wanda50+recover100`)."""

from __future__ import annotations

from typing import Any

from ..compress.config import NAME_PATTERNS, config_from_name
from ..errors import InvalidInputError
from .step import Context, Step


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


def _recover(match: Any) -> Step:
    steps = int(match[1])
    if steps < 1:
        raise InvalidInputError(f"{match[0]}: recovery needs at least one step, e.g. recover100")

    def apply(model: Any, context: Context) -> Any:
        from ..compress.recover import record_recovery, recover_

        record_recovery(model, recover_(model, context.calibration, steps=steps))
        return model

    doc = "fine-tuning on the calibration windows, pruned weights held at zero (AdamW, lr 2e-5, batch 4)"
    return Step(match[0], apply, doc=doc, calibrated=True)


# Step names (regular expressions matched whole) → the Step they make.
STEPS = [(pattern, lambda match: _step(match[0])) for pattern, _ in NAME_PATTERNS] + [(r"recover(\d+)", _recover)]
