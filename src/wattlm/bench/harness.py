"""`wattlm bench`: every variant of one model, scored for quality and metered for energy, in one run.

    options ─► model, text, windows ─► for each variant: build ─► quality (+KL to the baseline)
                                                              ─► prefill phase ─► decode phases
                                                              ─► one line in results.jsonl

The baseline is the first variant. Its pass also writes the reference log-probabilities that the
other variants' KL is computed against (see evaluate.quality). A resumed run skips variants that
already have a line; if the baseline is among them, its reference is recomputed without metering.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..energy.meter import EnergyMeter
from ..energy.sources.base import EnergySource, worst_provenance
from ..environment import environment
from ..errors import ConfigError, InvalidInputError
from ..evaluate.memory import PeakMemory, model_stats, resident_bytes, torch_thread_settings
from ..evaluate.perplexity import Protocol, make_windows
from ..evaluate.quality import Reference, score
from ..evaluate.speed import decode_figures, generate_call, prefill_call, run_phase
from ..fileio import check_new_folder
from ..intervals import rotation
from ..models.corpus import Corpus, load_corpus, load_text_file, tokenize_prefix
from ..models.load import ModelSpec, load_model, resolve_device, resolve_model, save_plain
from ..progress import Progress, no_progress
from ..results import RunDir
from ..variants import Context, Variant, resolve_all, with_engine
from . import distributed, rounds
from .config import BenchConfig

KIND = "bench"


@dataclass
class BenchResult:
    run: RunDir | None  # None on ranks other than 0
    records: list[dict[str, Any]] = field(default_factory=list)


# -- inputs --------------------------------------------------------------------------------------


def check_out(path: Path) -> None:
    """Fail before any work if `path` is a run already or cannot be created."""
    check_new_folder(path, f"continue it with {{resume}} {path}, or choose another {{out}}")


def _load_compressed(spec: ModelSpec) -> tuple[Any, Any]:
    from ..compress.store import load

    model, tokenizer = load(spec.location)
    if tokenizer is None:
        raise InvalidInputError(
            f"{spec.location} has no tokenizer files; re-run wattlm compress (it saves the tokenizer)"
        )
    return model, tokenizer


def calibration_ids(config: BenchConfig, tokenizer: Any, corpus: Corpus) -> tuple[Any, dict[str, Any]]:
    """Calibration windows from text the variants are not scored on: --calib-text, or the text after
    the evaluated tokens."""
    from ..compress.calibration import calibration_ids as draw

    if config.calib_text is not None:
        return draw(tokenizer, load_text_file(config.calib_text), config.calib_samples, config.seq_len, skip_tokens=0)
    return draw(tokenizer, corpus, config.calib_samples, config.seq_len, skip_tokens=config.max_tokens)


class ModelFactory:
    """Fresh fp32 copies of the model (as stored, for a compressed folder), one per variant.

    A GGUF is de-quantized once and kept as safetensors in a temporary folder, so each variant
    loads in a second instead of de-quantizing again; other sources are loaded from where they are.
    """

    def __init__(self, spec: ModelSpec, config: BenchConfig) -> None:
        self.spec, self.config = spec, config
        if spec.kind == "compressed":
            model, self.tokenizer = _load_compressed(spec)
        else:
            model, self.tokenizer = load_model(spec, trust_remote_code=config.trust_remote_code, offline=config.offline)
        self.context_len = getattr(model.config, "max_position_embeddings", None)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._first: Any = model
        if spec.kind in ("gguf", "default"):
            self._tmp = tempfile.TemporaryDirectory(prefix="wattlm-model-")
            save_plain(model, Path(self._tmp.name))

    def fresh(self) -> Any:
        if self._first is not None:  # the copy already in memory serves the first variant
            model, self._first = self._first, None
            return model
        if self.spec.kind == "compressed":
            return _load_compressed(self.spec)[0]
        import torch
        from transformers import AutoModelForCausalLM

        location = self._tmp.name if self._tmp is not None else self.spec.location
        local = self._tmp is not None or self.spec.kind != "hub" or self.config.offline
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=torch.float32, trust_remote_code=self.config.trust_remote_code, local_files_only=local
        )
        return model.eval()

    def close(self) -> None:
        self._first = None
        if self._tmp is not None:
            self._tmp.cleanup()


# -- one variant ---------------------------------------------------------------------------------


def _release_memory() -> None:
    """Give a finished variant's memory back to the OS, so the next one's peak RSS is its own:
    glibc keeps freed heap pages mapped unless asked to trim them."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc (macOS, musl): the peak may include memory freed by earlier variants


def _phase_figures(phase: Any) -> dict[str, Any]:
    tps, jpt = phase.tokens_per_s(), phase.j_per_token()
    return {
        "tokens_per_s": tps["median"],
        "j_per_token": jpt["median"],
        "tokens_per_s_range": [tps["min"], tps["max"]],
        "j_per_token_range": [jpt["min"], jpt["max"]],
        "tokens_per_call": phase.tokens_per_call,
        "seconds_per_call": phase.seconds_per_call,
        "provenance": phase.provenance,
        "overhead": phase.overhead,
        "measurements": phase.measurements(),
    }


def _compression(model: Any) -> list[dict[str, Any]]:
    if getattr(model, "engine", "hf") != "hf":  # an engine model keeps what was done before its export
        return list(model.compression)
    return [
        {k: r[k] for k in ("name", "kernel", "details")}
        for r in getattr(model.config, "wattlm_compression", None) or []
    ]


def _engine_type(model: Any) -> str:
    """What an engine model computes with, e.g. gguf:Q4_K_M or onnx:INT4 (its weights' type, not torch's dtype)."""
    kind = str(model.compression[-1]["details"]["type"])
    prefix = "onnx" if model.engine == "ort" else "gguf"
    return f"{prefix}:" + kind.removeprefix("gguf:").upper()


def _prompts(windows: Any, batch_size: int, prompt_len: int) -> Any:
    """[batch_size, prompt_len] prompts: the windows' first tokens, reusing windows if too few."""
    rows = [i % windows.shape[0] for i in range(batch_size)]
    return windows[rows, :prompt_len]


class Bench:
    def __init__(
        self,
        config: BenchConfig,
        *,
        sources: tuple[EnergySource, ...] | None = None,
        progress: Progress = no_progress,
        dist: distributed.Dist | None = None,
        retry_failed: bool = False,
    ) -> None:
        self.config = config
        self.progress = progress
        self.retry_failed = retry_failed
        self.dist = dist or distributed.from_env()
        self.device = resolve_device(config.device)
        if config.threads is not None:  # before any model runs: transformers and llama.cpp variants alike
            import torch

            torch.set_num_threads(config.threads)
        self.variants = resolve_all(with_engine(config.variants, config.engine), self.device)
        self._probe_text = ""
        # Known before anything loads: schemes that will run without a fast kernel on this device.
        self.warnings = [w for v in self.variants for w in v.warnings(self.device)]
        if sources is None:
            from ..energy.discover import discover

            sources = discover().sources
        self.sources = distributed.rank_sources(tuple(sources), self.dist)
        if config.rounds > 1 and self.dist.world > 1:
            raise ConfigError(
                "{rounds} above 1 times every variant in one process; run it without --nproc (the speed phases never"
                " shard)",
                field="rounds",
            )
        # --rounds: each variant built, with its per-round phase figures, kept until the last round ends
        self._held: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
        self._resident_at_start: int | None = None

    def run(self, out: Path | None = None, resume: Path | None = None) -> BenchResult:
        dist = self.dist
        if dist.is_main and resume is None and out is not None:
            check_out(out)
        distributed.init(dist, self.device)
        try:
            return self._run(out, resume)
        finally:
            distributed.shutdown(dist)

    def _run(self, out: Path | None, resume: Path | None) -> BenchResult:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # wattlm draws its own; theirs would interleave
        cfg, dist = self.config, self.dist
        self.progress("load model", 0, 1)
        spec = resolve_model(cfg.model, offline=cfg.offline)
        if spec.kind not in ("gguf", "default") and any(s.alone for v in self.variants for s in v.steps):
            raise InvalidInputError(
                f"variant gguf-source runs the model's own .gguf file, but {spec.name} is not one; use gguf-<type> to"
                " export it"
            )
        corpus = load_corpus(cfg.text, cfg.dataset, offline=cfg.offline)
        self._probe_text = corpus.text[:4000]
        factory = ModelFactory(spec, cfg)
        self.progress("load model", 1, 1)
        try:
            protocol = Protocol(cfg.seq_len, cfg.max_tokens)
            ids = tokenize_prefix(factory.tokenizer, corpus.text, cfg.max_tokens)
            windows = make_windows(ids, protocol, factory.context_len)
            if factory.context_len is not None and cfg.prompt_len + cfg.new_tokens > factory.context_len:
                raise ConfigError(
                    f"{{prompt_len}} + {{new_tokens}} ({cfg.prompt_len + cfg.new_tokens}) exceed the model's context of"
                    f" {factory.context_len}",
                    field="prompt_len",
                )
            info: dict[str, Any] = {
                "config": cfg.to_dict(),
                "model": {**spec.__dict__, "context_len": factory.context_len},
                "text": {"name": corpus.name, "source": corpus.source, "sha256": corpus.sha256},
                "protocol": {
                    "seq_len": protocol.seq_len,
                    "max_tokens": protocol.max_tokens,
                    "windows": int(windows.shape[0]),
                    "tokens": int(windows.numel()),
                    "kl_windows": min(cfg.kl_windows, int(windows.shape[0])),
                    "kl": "KL(baseline ‖ variant) of next-token distributions, nats per predicted token",
                    "phases": (
                        f"{cfg.repeats} meter windows of ≥ {cfg.min_phase_s:g} s each after 1 warm-up call; median and"
                        " range"
                        + (
                            f"; {cfg.rounds} rounds of every variant's phases in rotating order, median over rounds"
                            " and paired ratios to the baseline with 95 % bootstrap intervals"
                            if cfg.rounds > 1
                            else ""
                        )
                    ),
                    "world_size": dist.world,
                },
                "calibration": None,
                "baseline": self.variants[0].spec,
                "variants": [v.spec for v in self.variants],
                "environment": environment(self.device),
                "energy_sources": sorted({c.source for s in self.sources for c in s.channels()}),
            }
            calibration = None
            if any(v.calibrated for v in self.variants):
                calibration, info["calibration"] = calibration_ids(cfg, factory.tokenizer, corpus)
            run, done = self._open_run(out, resume, info)
            reference = Reference() if info["protocol"]["kl_windows"] else None
            try:
                return self._sweep(run, done, factory, windows, reference, info, calibration)
            finally:
                if reference is not None:
                    reference.close()
        finally:
            factory.close()

    def _open_run(
        self, out: Path | None, resume: Path | None, info: dict[str, Any]
    ) -> tuple[RunDir | None, dict[str, dict]]:
        """Rank 0 creates or reopens the run; every rank learns which variants are done."""
        run, done, error = None, {}, None
        if self.dist.is_main:
            try:
                if resume is not None:
                    run = RunDir.open(resume, KIND)
                    for key in ("model", "text", "protocol"):
                        if run.info.get(key) != info[key]:
                            raise InvalidInputError(
                                f"{resume}: the {key} differs from the run being resumed; resume with the options it"
                                " was started with"
                            )
                    # The last record of each variant counts; failed ones are kept unless retried.
                    done = {r["variant"]: r for r in run.records() if "variant" in r}
                    done = {
                        v: r
                        for v, r in done.items()
                        if r.get("status") == "ok" or (r.get("status") == "failed" and not self.retry_failed)
                    }
                else:
                    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
                    path = out or Path("runs") / f"{stamp}-{info['model']['name']}"
                    run = RunDir.create(path, KIND, info)
            except InvalidInputError as e:
                error = e
        error, done = distributed.broadcast((error, done), self.dist)
        if error is not None:
            raise error
        return run, done

    def _sweep(self, run, done, factory, windows, reference, info, calibration) -> BenchResult:
        kl_windows = info["protocol"]["kl_windows"]
        local, indices = distributed.shard(windows, self.dist)
        records = [done[v.spec] for v in self.variants if v.spec in done]
        baseline_ppl = done.get(self.variants[0].spec, {}).get("ppl")
        pending: list[dict[str, Any]] = []  # with --rounds: written when the last round ends
        self._resident_at_start = resident_bytes(self.device)
        with EnergyMeter(self.sources) as meter:
            for position, variant in enumerate(self.variants):
                is_baseline = position == 0
                if is_baseline and done.get(variant.spec, {}).get("status") == "failed":
                    reference = None  # a broken baseline is no reference: no KL for the others
                if variant.spec in done:
                    if is_baseline and reference is not None and len(done) < len(self.variants):
                        self.progress(f"{variant.spec}: baseline reference", 0, 1)
                        model = self._build(variant, factory, calibration)
                        score(
                            model,
                            local,
                            reference=reference,
                            write_reference=True,
                            kl_windows=kl_windows,
                            indices=indices,
                        )
                        del model
                    continue
                record = self._variant(
                    meter,
                    variant,
                    factory,
                    windows,
                    local,
                    indices,
                    reference,
                    is_baseline,
                    kl_windows,
                    baseline_ppl,
                    calibration,
                )
                if is_baseline:
                    baseline_ppl = record["ppl"]  # None when the baseline failed: no ΔPPL for the others
                    if record["status"] == "failed":
                        reference = None
                if self.config.rounds > 1:
                    pending.append(record)
                    continue
                if run is not None:
                    run.append(record)
                records.append(record)
            if self.config.rounds > 1:
                pending = distributed.broadcast(self._later_rounds(meter, windows, pending), self.dist)
                for record in pending:
                    if run is not None:
                        run.append(record)
                    records.append(record)
        return BenchResult(run, records)

    def _later_rounds(self, meter: EnergyMeter, windows: Any, pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rounds 2..N of the speed phases in rotating order (round 1 ran with each variant's build), then
        each record's figures from all rounds and its paired ratios to the baseline (rounds.finish)."""
        cfg = self.config
        specs = list(self._held)  # the variants timed in round 1, in the run's order
        try:
            for r in range(1, cfg.rounds):
                for spec in rotation(specs, r):
                    model, per_round = self._held[spec]
                    per_round.append(self._phases(meter, model, spec, windows, f" (round {r + 1}/{cfg.rounds})"))
            per_variant = {spec: per_round for spec, (_, per_round) in self._held.items()}
        finally:
            self._held.clear()
            _release_memory()
        out = rounds.finish(pending, per_variant, self.variants[0].spec, cfg.prompt_len, cfg.new_tokens)
        for record in out:
            if record["variant"] in per_variant:
                _summarize(record)
        return out

    def _build(self, variant: Variant, factory: ModelFactory, calibration: Any) -> Any:
        import torch

        model = factory.fresh().to(self.device)
        spec = factory.spec
        context = Context(
            device=self.device,
            calibration=calibration,
            tokenizer=factory.tokenizer,
            model_name=spec.name,
            source_gguf=Path(spec.location) if spec.kind in ("gguf", "default") else None,
            threads=torch.get_num_threads(),
            probe_text=self._probe_text,
        )
        built = variant.build(model, context)
        return built.eval() if variant.engine == "hf" else built  # an engine model is always in inference mode

    def _variant(
        self,
        meter,
        variant,
        factory,
        windows,
        local,
        indices,
        reference,
        is_baseline,
        kl_windows,
        baseline_ppl,
        calibration,
    ) -> dict[str, Any]:
        dist, spec = self.dist, variant.spec
        held_bytes = 0
        if self._held and self._resident_at_start is not None:  # --rounds keeps earlier variants in memory
            held_bytes = (resident_bytes(self.device) or 0) - self._resident_at_start
        self.progress(f"{spec}: build", 0, 1)
        t0 = time.perf_counter()
        model = self._build(variant, factory, calibration)
        _release_memory()  # what building freed (e.g. the float weights a quantization replaced)
        # One unmetered forward first: a compiled variant compiles here, not inside the eval window.
        score(model, windows[:1])
        build_s = time.perf_counter() - t0
        self.progress(f"{spec}: build", 1, 1)

        # Quality, sharded across ranks; every rank meters the devices it owns.
        self.progress(f"{spec}: perplexity", 0, 1)
        meter_here = bool(self.sources)
        if meter_here:
            meter.begin_window("eval")
        t_eval = time.perf_counter()
        sums = score(
            model, local, reference=reference, write_reference=is_baseline, kl_windows=kl_windows, indices=indices
        )
        eval_s = time.perf_counter() - t_eval
        eval_m = meter.end_window("eval").with_work(tokens=sums.predicted) if meter_here else None
        quality = distributed.sum_quality(sums, dist).result()
        eval_parts = [m for m in distributed.gather(eval_m.to_dict() if eval_m else None, dist) if m]
        eval_seconds = max(distributed.gather(eval_s, dist))
        self.progress(f"{spec}: perplexity", 1, 1)

        record: dict[str, Any] | None = None
        if dist.is_main and not quality.finite:
            # A broken variant (a compression that destroyed the model, an fp16 overflow) is a
            # result: recorded as failed with the reason, and the sweep goes on.
            record = self._failed(variant, model, is_baseline, quality, build_s)
        elif dist.is_main:
            # Peak memory of serving (the timed phases), not of the evaluation's bookkeeping.
            peak = PeakMemory(self.device, held_bytes=held_bytes)
            peak.reset()
            record = self._phases(
                meter, model, spec, windows, f" (round 1/{self.config.rounds})" if self.config.rounds > 1 else ""
            )
            if self.config.rounds > 1:
                self._held[spec] = (model, [record])
            eval_j = sum(m["it_energy_j"] for m in eval_parts)
            record["eval"] = {
                "tokens_per_s": quality.predicted_tokens / eval_seconds,
                "j_per_token": eval_j / quality.predicted_tokens if eval_parts else None,
                "provenance": worst_provenance([m["provenance"] for m in eval_parts]),
                "ranks": dist.world,
                "measurements": eval_parts,
            }
            stats = model.stats() if variant.engine != "hf" else model_stats(model)
            # Thread settings of every runtime involved: torch always (it scores every variant), the
            # engine's own where one runs the variant; equal unless the user set them apart.
            threads = torch_thread_settings() | (model.thread_settings() if variant.engine != "hf" else {})
            ppl = quality.ppl
            record = {
                "variant": spec,
                "status": "ok",
                "baseline": is_baseline,
                "dtype": variant.dtype if variant.engine == "hf" else _engine_type(model),
                "engine": variant.engine,
                "steps": [s.name for s in variant.steps],
                # What each quantization did and which kernel it runs on ("fast": false = a fallback).
                "compression": _compression(model),
                "ppl": ppl,
                "nll": quality.nll,
                "delta_ppl_pct": (
                    0.0
                    if is_baseline
                    else (None if baseline_ppl is None else 100.0 * (ppl - baseline_ppl) / baseline_ppl)
                ),
                "kl": 0.0 if is_baseline else quality.kl,
                "top1_agreement": 1.0 if is_baseline else quality.top1_agreement,
                "kl_tokens": quality.kl_tokens,
                "predicted_tokens": quality.predicted_tokens,
                **record,
                "peak_memory_bytes": peak.peak_bytes(),
                "peak_memory_method": peak.method,
                **stats,
                "threads": threads,
                "build_s": build_s,
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            _summarize(record)
            record["energy_scope"] = "IT energy of every metered device: " + ", ".join(
                sorted({c.domain for s in self.sources for c in s.channels()})
            )
        distributed.barrier(dist)
        del model
        _release_memory()
        return distributed.broadcast(record, dist)

    def _failed(self, variant: Variant, model: Any, is_baseline: bool, quality: Any, build_s: float) -> dict[str, Any]:
        what = "NaN" if math.isnan(quality.nll) else "infinite"
        nll = f"mean NLL {quality.nll:.4g} nats" if math.isfinite(quality.nll) else f"{what} log-likelihood"
        return {
            "variant": variant.spec,
            "status": "failed",
            "reason": (
                f"perplexity is {what if not math.isfinite(quality.nll) else 'beyond float range'} ({nll} "
                f"on {quality.predicted_tokens} tokens): the variant's outputs are broken, so it was not timed"
            ),
            "baseline": is_baseline,
            "engine": variant.engine,
            "steps": [s.name for s in variant.steps],
            "compression": _compression(model),
            "ppl": None,
            "nll": quality.nll if math.isfinite(quality.nll) else None,
            "predicted_tokens": quality.predicted_tokens,
            "build_s": build_s,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _phases(self, meter: EnergyMeter, model: Any, spec: str, windows: Any, round_label: str = "") -> dict[str, Any]:
        cfg = self.config

        def ticker(task: str) -> Callable[[int], None]:
            task += round_label
            self.progress(task, 0, cfg.repeats)
            return lambda r: self.progress(task, r, cfg.repeats)

        opts: dict[str, Any] = {"min_s": cfg.min_phase_s, "repeats": cfg.repeats}
        prefill = run_phase(
            meter,
            "prefill",
            prefill_call(model, windows[:1]),
            cfg.seq_len,
            on_repeat=ticker(f"{spec}: prefill"),
            **opts,
        )
        decode = []
        for b in cfg.batch_sizes:
            prompts = _prompts(windows, b, cfg.prompt_len)
            prompt = run_phase(
                meter,
                f"prompt-b{b}",
                prefill_call(model, prompts),
                b * cfg.prompt_len,
                on_repeat=ticker(f"{spec}: prompt b={b}"),
                **opts,
            )
            generate = run_phase(
                meter,
                f"generate-b{b}",
                generate_call(model, prompts, cfg.new_tokens),
                b * cfg.new_tokens,
                on_repeat=ticker(f"{spec}: decode b={b}"),
                **opts,
            )
            decode.append(decode_figures(generate, prompt, b, cfg.new_tokens))
        return {"prefill": _phase_figures(prefill), "decode": decode}


def _summarize(record: dict[str, Any]) -> None:
    """The record's worst provenance and largest harness overhead over its phases."""
    phases = [record["eval"], record["prefill"], *record["decode"]]
    record["provenance"] = worst_provenance([p["provenance"] for p in phases])
    record["harness_overhead"] = max(p.get("overhead", 0.0) for p in phases)


def resumed_config(resume: str | Path, offline: bool = False) -> BenchConfig:
    """The options a bench run folder was started with (what `--resume` continues)."""
    return BenchConfig.from_dict({**RunDir.open(resume, KIND).info.get("config", {}), "offline": offline})


def run_bench(
    config: BenchConfig | None,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    sources: tuple[EnergySource, ...] | None = None,
    progress: Progress = no_progress,
    retry_failed: bool = False,
) -> BenchResult:
    """Run (or resume) a bench and return its records. See the module docstring for the flow.

    `config` None with `resume`: continue the run with the options it was started with.
    A variant whose perplexity is not finite is recorded with status "failed" and its reason; a
    resumed run keeps it as it is unless `retry_failed`."""
    if config is None:
        if resume is None:
            raise InvalidInputError("give a BenchConfig, or resume= a run folder to continue with its own options")
        config = resumed_config(resume)
    bench = Bench(config, sources=sources, progress=progress, retry_failed=retry_failed)
    return bench.run(Path(out) if out is not None else None, Path(resume) if resume is not None else None)
