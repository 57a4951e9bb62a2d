"""Timed, metered phases: prefill (one forward pass over a prompt) and greedy decoding.

A phase is `repeats` meter windows, each running the same call until at least `min_s` seconds
have passed (a window of a few calls would be counter granularity, not energy), after `warmup`
unmeasured calls. Per window we keep the calls made, the time spent inside the calls and the
measurement; a phase reports the median and the range over its windows.

Decode energy cannot be read on its own: every generation starts with the prefill of its prompt.
Like optimum-benchmark, we measure the prompt's prefill in a phase of its own (same batch, same
shape) and subtract its per-call time and energy from those of whole generations; what remains is
the decode steps. The record says so (`method`).
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..energy.measurement import Measurement


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@dataclass(frozen=True)
class Repetition:
    calls: int
    duration_s: float  # the meter window's duration
    work_s: float  # time spent inside the calls; the rest is harness overhead
    measurement: Measurement

    @property
    def energy_j_per_call(self) -> float:
        return self.measurement.it_energy_j / self.calls

    @property
    def seconds_per_call(self) -> float:
        return self.work_s / self.calls


@dataclass(frozen=True)
class Phase:
    name: str
    tokens_per_call: int
    reps: tuple[Repetition, ...]

    @property
    def seconds_per_call(self) -> float:
        return statistics.median(r.seconds_per_call for r in self.reps)

    @property
    def energy_j_per_call(self) -> float:
        return statistics.median(r.energy_j_per_call for r in self.reps)

    def tokens_per_s(self) -> dict[str, float]:
        return _spread([self.tokens_per_call / r.seconds_per_call for r in self.reps])

    def j_per_token(self) -> dict[str, float]:
        return _spread([r.energy_j_per_call / self.tokens_per_call for r in self.reps])

    @property
    def overhead(self) -> float:
        """Share of the metered time not spent in the calls (meter edges, loop bookkeeping)."""
        total = sum(r.duration_s for r in self.reps)
        return max(0.0, 1.0 - sum(r.work_s for r in self.reps) / total) if total > 0 else 0.0

    @property
    def provenance(self) -> str:
        return self.reps[0].measurement.provenance

    def measurements(self) -> list[dict[str, Any]]:
        return [r.measurement.to_dict() for r in self.reps]


def run_phase(
    meter: Any,
    name: str,
    call: Callable[[], Any],
    tokens_per_call: int,
    *,
    min_s: float = 3.0,
    repeats: int = 3,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    on_repeat: Callable[[int], None] | None = None,
) -> Phase:
    """Run `call` in `repeats` meter windows of at least `min_s` seconds each."""
    for _ in range(warmup):
        call()
    reps = []
    for r in range(repeats):
        calls, work_s = 0, 0.0
        window = f"{name}#{r}"
        meter.begin_window(window)
        start = clock()
        while True:
            t0 = clock()
            call()
            t1 = clock()
            work_s += t1 - t0
            calls += 1
            if t1 - start >= min_s:
                break
        m = meter.end_window(window).with_work(tokens=calls * tokens_per_call)
        reps.append(Repetition(calls, m.duration_s, min(work_s, m.duration_s), m))
        if on_repeat is not None:
            on_repeat(r + 1)
    return Phase(name, tokens_per_call, tuple(reps))


def decode_figures(generate: Phase, prompt: Phase, batch_size: int, new_tokens: int) -> dict[str, Any]:
    """Decode tokens/s and J/token: whole generations minus their prompt's prefill, per window.

    Where the generations did not take more time (or energy) than the prompt's prefill alone (the
    median over the windows), the difference says nothing about decoding: the figure is left out
    (None) and `unresolved` says why, instead of a zero or negative number. A range is given only
    where every window resolved it."""
    steps_tokens = batch_size * (new_tokens - 1)  # the prefill makes the first token; each step one more
    e_prompt, s_prompt = prompt.energy_j_per_call, prompt.seconds_per_call
    diff_j = [r.energy_j_per_call - e_prompt for r in generate.reps]
    diff_s = [r.seconds_per_call - s_prompt for r in generate.reps]
    unresolved = []
    if statistics.median(diff_s) <= 0:
        unresolved.append(f"the generations took no longer than their prompt's prefill ({s_prompt:.4g} s)")
    if statistics.median(diff_j) <= 0:
        unresolved.append(f"the generations used no more energy than their prompt's prefill ({e_prompt:.4g} J)")
    hint = "; generate more tokens (--new-tokens) or meter longer windows (--min-phase-s)"
    # Per-window figures; a window that did not resolve its difference counts as 0 tok/s, and its
    # presence leaves the range out (below).
    tps = _spread([steps_tokens / d if d > 0 else 0.0 for d in diff_s]) if statistics.median(diff_s) > 0 else None
    j = _spread([d / steps_tokens for d in diff_j]) if statistics.median(diff_j) > 0 else None
    return {
        "batch_size": batch_size,
        "new_tokens": new_tokens,
        "tokens_per_s": tps["median"] if tps else None,
        "j_per_token": j["median"] if j else None,
        "tokens_per_s_range": [tps["min"], tps["max"]] if tps and tps["min"] > 0 else None,
        "j_per_token_range": [j["min"], j["max"]] if j and j["min"] > 0 else None,
        "unresolved": "; ".join(unresolved) + hint if unresolved else None,
        "ttft_s": s_prompt,
        "prompt_j": e_prompt,
        "generation_s": generate.seconds_per_call,
        "generation_j": generate.energy_j_per_call,
        "method": "whole greedy generations minus the separately measured prefill of the same prompt batch",
        "provenance": generate.provenance,
        "overhead": max(generate.overhead, prompt.overhead),
        "measurements": {"prompt": prompt.measurements(), "generate": generate.measurements()},
    }


# -- the calls ---------------------------------------------------------------------------------------


def _keeps_last_logits(model: Any) -> dict[str, Any]:
    """Generation only needs the last position's logits; ask for just those where the model can."""
    params = inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def _cache_name(model: Any) -> str:
    """The KV cache's name in and out of forward: `cache` in newer transformers (which warns about
    `past_key_values` on every step), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def prefill_call(model: Any, prompt: Any) -> Callable[[], Any]:
    """One forward pass over `prompt` ([batch, len] ids) that builds the KV cache, as generation does."""
    import torch

    if getattr(model, "engine", "hf") != "hf":  # engines.llamacpp: the runtime makes the call
        return model.prefill_call(prompt)
    device = next(model.parameters()).device
    prompt = prompt.to(device)
    extra = _keeps_last_logits(model)

    def call() -> Any:
        with torch.inference_mode():
            out = model(prompt, use_cache=True, **extra)
            token = out.logits[:, -1].argmax(-1)
        _sync(device)
        return token

    return call


def greedy_generate(model: Any, prompt: Any, new_tokens: int) -> Any:
    """Greedy decoding with the KV cache: the prefill makes token 1, then one step per token.

    Written out rather than `model.generate` so each call does exactly `new_tokens` steps (no
    early stop at an end-of-sequence token, no sampling or logits processors) and nothing else.
    Returns the [batch, new_tokens] generated ids.
    """
    import torch

    extra = _keeps_last_logits(model)
    cache_name = _cache_name(model)
    with torch.inference_mode():
        out = model(prompt, use_cache=True, **extra)
        token = out.logits[:, -1:].argmax(-1)  # [batch, 1]
        generated = [token]
        for _ in range(new_tokens - 1):
            out = model(token, **{cache_name: getattr(out, cache_name)}, use_cache=True, **extra)
            token = out.logits[:, -1:].argmax(-1)
            generated.append(token)
    return torch.cat(generated, dim=1)


def generate_call(model: Any, prompt: Any, new_tokens: int) -> Callable[[], Any]:
    if getattr(model, "engine", "hf") != "hf":
        return model.generate_call(prompt, new_tokens)
    device = next(model.parameters()).device
    prompt = prompt.to(device)

    def call() -> Any:
        ids = greedy_generate(model, prompt, new_tokens)
        _sync(device)
        return ids

    return call
