"""Calibration plumbing: decoder layers of a causal LM, their inputs, and hooks on linear layers.

Calibrated methods look at the activations a layer really sees. The decoder layers are found as
the `nn.ModuleList` holding `config.num_hidden_layers` modules (Llama, Mistral, Qwen, Phi, GPT-2
and most others have one), and their inputs are caught by stopping the forward pass at layer 0, so
that position embeddings and attention masks come from the model's own code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError


class _Stop(Exception):
    """Raised in a hook to end a forward pass once the wanted inputs are caught."""


def decoder_layers(model: Any) -> nn.ModuleList:
    count = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise InvalidInputError(
        f"cannot find the decoder layers of {type(model).__name__} (no list of {count} layers); use a technique without"
        " calibration"
    )


def batches(calibration: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, calibration.shape[0], batch_size):
        yield calibration[start : start + batch_size]


@torch.no_grad()
def first_layer_inputs(
    model: Any, calibration: torch.Tensor, batch_size: int
) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """(hidden states [b, seq, d], keyword arguments) that layer 0 receives, per calibration batch."""
    layer0 = decoder_layers(model)[0]
    caught: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "past_key_value", "use_cache")}
        caught.append((hidden, kwargs))
        raise _Stop

    handle = layer0.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        forward_until(model, calibration, batch_size)
    finally:
        handle.remove()
    return caught


def run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    out = layer(hidden, use_cache=False, **kwargs)
    return out[0] if isinstance(out, tuple) else out


@contextmanager
def input_hooks(modules: dict[str, nn.Module], on_input: Any, stop_at: nn.Module | None = None) -> Iterator[None]:
    """Call `on_input(name, x [rows, in_features])` for every call of each module; optionally end the
    forward pass (raise _Stop) when it reaches `stop_at` — e.g. at lm_head, sparing the logits
    ([batch, seq, vocab]: 800 MB for 8 × 512 tokens of a 49k vocabulary)."""

    def make(name: str) -> Any:
        def hook(mod: nn.Module, args: tuple) -> None:
            x = args[0]
            on_input(name, x.reshape(-1, x.shape[-1]))

        return hook

    def stop(mod: nn.Module, args: tuple) -> None:
        raise _Stop

    handles = [module.register_forward_pre_hook(make(name)) for name, module in modules.items()]
    if stop_at is not None:  # registered last, so a hooked stop_at records its input first
        handles.append(stop_at.register_forward_pre_hook(stop))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def forward_until(model: Any, calibration: torch.Tensor, batch_size: int) -> None:
    """Run the calibration batches through the model; a hook may end each pass early with _Stop."""
    device = next(model.parameters()).device
    for ids in batches(calibration, batch_size):
        try:
            model(input_ids=ids.to(device), use_cache=False)
        except _Stop:
            pass


@torch.no_grad()
def layerwise(
    model: Any,
    targets: dict[str, nn.Module],
    calibration: torch.Tensor,
    new_stats: Callable[[], Any],
    process: Callable[[dict[str, nn.Module], Any], None],
    batch_size: int,
) -> None:
    """Sequential calibration (GPTQ, SparseGPT, Wanda): for each decoder layer in order, feed it the
    calibration inputs with `stats(name, x)` hooked on its targets, `process(its targets, stats)`
    (which may change or swap them), then compute the layer's outputs again — so layer l is
    calibrated on what the already-compressed layers 0..l-1 produce. Targets outside the decoder
    stack (lm_head) come last, on the compressed model's final hidden states."""
    layers = decoder_layers(model)
    names = {id(module): name for name, module in model.named_modules()}
    done: set[str] = set()
    inputs = first_layer_inputs(model, calibration, batch_size)
    for layer in layers:
        prefix = names[id(layer)] + "."
        own = {name: module for name, module in targets.items() if name.startswith(prefix)}
        if own:
            stats = new_stats()
            with input_hooks(own, stats):
                for hidden, kwargs in inputs:
                    run_layer(layer, hidden, kwargs)
            process(own, stats)
            done.update(own)
        inputs = [(run_layer(layer, hidden, kwargs), kwargs) for hidden, kwargs in inputs]
    rest = {name: module for name, module in targets.items() if name not in done}
    if rest:
        stats = new_stats()
        with input_hooks(rest, stats, stop_at=model.get_output_embeddings()):
            forward_until(model, calibration, batch_size)
        process(rest, stats)
