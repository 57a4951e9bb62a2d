"""TUNE: the lowest-energy server configuration that meets a latency SLO — any OpenAI-compatible
server started from a command template over a grid of its own options (and GPU power limits and
clocks), every configuration measured with `wattlm load`, in rotating rounds.

    from wattlm.sweep import SweepConfig, run_sweep
    run_sweep(SweepConfig(server="llama-server", model="m.gguf", grid={"parallel": ("1", "4")},
                          load={"concurrencies": [8], "requests": 64, "window": "steady"}), "runs/sweep")
"""

from .config import SweepConfig, parse_slo
from .runner import SweepResult, run_sweep
from .template import Configuration, Template, builtins, parse_grid

__all__ = [
    "Configuration",
    "SweepConfig",
    "SweepResult",
    "Template",
    "builtins",
    "parse_grid",
    "parse_slo",
    "run_sweep",
]
