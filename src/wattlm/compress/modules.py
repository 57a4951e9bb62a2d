"""Finding and replacing a model's linear layers: what every compression handler shares."""

from __future__ import annotations

import fnmatch
from typing import Any


def targets(model: Any, keep: tuple[str, ...]) -> dict[str, Any]:
    """Every plain `nn.Linear` whose qualified name matches no `keep` pattern."""
    from torch import nn

    return {
        name: module
        for name, module in model.named_modules()
        if type(module) is nn.Linear and not any(fnmatch.fnmatchcase(name, pattern) for pattern in keep)
    }


def set_module(model: Any, name: str, module: Any) -> None:
    """Put `module` at `name` and at every other name of the module there (layers that share it)."""
    old = model.get_submodule(name)
    names = [n for n, m in model.named_modules(remove_duplicate=False) if m is old] or [name]
    for alias in names:
        parent_name, _, child = alias.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
