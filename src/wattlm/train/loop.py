"""The training loop: every optimizer step in its own energy window, written to a run folder.

    <run>/run.json        kind "train": config, model, text, data preparation, environment
    <run>/results.jsonl   {"kind": "eval"} before and after, {"kind": "step"} per optimizer step
                          (loss, tokens, energy, J/token), {"kind": "epoch"} per finished pass,
                          {"kind": "summary"} at the end (whole-run measurement, totals)
    <run>/checkpoints/    see checkpoint.py;  <run>/model/  the trained model

Under torchrun each rank meters only what it owns (its GPU; local rank 0 also the CPU and DRAM,
see wattlm.ranks), and rank 0 adds the ranks' figures up, so nothing is counted twice. A step's
energy is the sum over ranks of that step's window; its loss the token-weighted mean.
Synchronisation: ddp all-reduces gradients every step; local-sgd lets each rank step on its own
and averages the parameters every `sync_every` steps (and at the end); fsdp shards parameters,
gradients and optimizer state (fully_shard per decoder layer; gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import ranks
from ..energy.meter import EnergyMeter
from ..energy.sources.base import EnergySource, worst_provenance
from ..errors import ConfigError, InvalidInputError
from ..finetune import hold_zeros_, optimizer_step, sparse_masks
from ..progress import Progress, no_progress
from ..results import RunDir
from .config import TrainConfig
from .data import IGNORE, Prepared, batch_rows, prepare, steps_per_epoch


def autocast(config: TrainConfig, device: Any) -> Any:
    import torch

    if config.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def average_parameters_(model: Any) -> None:
    """Local SGD's synchronisation: every rank's parameters replaced by their mean over the ranks."""
    import torch
    import torch.distributed as td

    world = td.get_world_size()
    with torch.no_grad():
        for p in model.parameters():
            td.all_reduce(p.data, op=td.ReduceOp.SUM)
            p.data.div_(world)


def params_digest(model: Any) -> float:
    """A float64 sum of every parameter: equal on two ranks exactly when they hold the same numbers (in practice)."""
    import torch

    with torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))


def merge_steps(per_rank: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One record per step from every rank's: energy and tokens summed, loss token-weighted."""
    merged = []
    for parts in zip(*per_rank, strict=True):
        tokens = sum(p["tokens"] for p in parts)
        energy = sum(p["energy_j"] for p in parts)
        first = parts[0]
        record = {
            **{k: v for k, v in first.items() if k not in ("loss_sum", "digest")},
            "loss": sum(p["loss_sum"] for p in parts) / max(sum(p["label_tokens"] for p in parts), 1),
            "tokens": tokens,
            "label_tokens": sum(p["label_tokens"] for p in parts),
            "energy_j": energy,
            "j_per_token": energy / tokens if tokens else None,
            "duration_s": max(p["duration_s"] for p in parts),
            "provenance": worst_provenance(p["provenance"] for p in parts),
            "ranks": len(parts),
        }
        if "digest" in first:
            record["params_digest"] = [p["digest"] for p in parts]
        merged.append(record)
    return merged


def _json_ppl(ppl: float) -> float | None:
    """A perplexity for a JSON record: None where it is not finite (a diverged model)."""
    return ppl if math.isfinite(ppl) else None


class Trainer:
    """One training run. `run()` returns the summary record (on every rank; complete on rank 0)."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        sources: tuple[EnergySource, ...] | None = None,
        progress: Progress = no_progress,
        dist: ranks.Dist | None = None,
    ) -> None:
        from ..models.load import resolve_device
        from .setup import check_device

        self.config = config
        self.progress = progress
        self.dist = dist or ranks.from_env()
        self.device = resolve_device(config.device)
        check_device(config, self.device)
        if config.sync != "ddp" and not self.dist.active:
            progress(f"--sync {config.sync} has no effect in a single process; run under torchrun (or --nproc N)")
        if sources is None:
            from ..energy.discover import discover

            sources = discover().sources
        self.sources = ranks.rank_sources(tuple(sources), self.dist)

    # -- the run -----------------------------------------------------------------------------

    def run(self, out: Path | None = None, resume: Path | None = None) -> dict[str, Any]:
        from ..fileio import check_new_folder

        if self.dist.is_main and resume is None and out is not None:
            check_new_folder(out, f"continue it with {{resume}} {out}, or choose another {{out}}")
        ranks.init(self.dist, self.device)
        try:
            summary = self._run(out, resume)
            # Every rank waits for the others before the process group goes: a rank that tears it
            # down while gloo still serves a peer's last collective aborts ("terminate called").
            ranks.barrier(self.dist)
            return summary
        finally:
            ranks.shutdown(self.dist)

    def _run(self, out: Path | None, resume: Path | None) -> dict[str, Any]:
        import torch
        from transformers.utils import logging as hf_logging

        from ..environment import environment
        from ..models.corpus import load_corpus
        from .setup import load_models

        hf_logging.disable_progress_bar()
        cfg, dist = self.config, self.dist
        torch.manual_seed(cfg.seed)
        self.progress("load model and text")
        models = load_models(cfg)
        corpus = load_corpus(cfg.text, cfg.dataset, offline=cfg.offline)
        data = prepare(
            corpus.text,
            models.tokenizer,
            seq_len=cfg.seq_len,
            eval_tokens=cfg.eval_windows * cfg.seq_len + 1,
            train_tokens=cfg.steps * cfg.batch_size * dist.world * cfg.seq_len,
            documents=cfg.documents,
            dedup=cfg.dedup,
            near_threshold=cfg.near_threshold,
            pack_rows=cfg.pack,
            seed=cfg.seed,
        )
        batch_rows(0, len(data.rows), cfg.batch_size, dist.world, 0, cfg.seed)  # fails early when the text is too short
        info = {
            "config": cfg.to_dict(),
            "model": models.spec.__dict__,
            "teacher": models.teacher_spec.__dict__ if models.teacher_spec else None,
            "text": {"name": corpus.name, "source": corpus.source, "sha256": corpus.sha256},
            "data": {
                **data.info,
                "steps_per_epoch": steps_per_epoch(len(data.rows), cfg.batch_size, dist.world),
                "world_size": dist.world,
            },
            "environment": environment(self.device),
            "energy_sources": sorted({c.source for s in self.sources for c in s.channels()}),
        }
        run = self._open_run(out, resume, info)
        with EnergyMeter(self.sources) as meter:
            return self._train(meter, run, models, data, resume is not None)

    def _open_run(self, out: Path | None, resume: Path | None, info: dict[str, Any]) -> RunDir | None:
        """Rank 0 creates or reopens the run folder; an error there stops every rank."""
        run, error = None, None
        if self.dist.is_main:
            try:
                run = self._open_main(out, resume, info)
            except InvalidInputError as e:
                error = e
        error = ranks.broadcast(error, self.dist)
        if error is not None:
            raise error
        return run

    def _open_main(self, out: Path | None, resume: Path | None, info: dict[str, Any]) -> RunDir:
        if resume is not None:
            run = RunDir.open(resume, "train")
            old = TrainConfig.from_dict(run.info["config"])
            new = TrainConfig.from_dict(info["config"])
            if dataclasses.replace(old, steps=new.steps) != new:
                raise ConfigError(
                    f"{resume} was run with other options; resume with the same options (only {{steps}} may grow)",
                    field="steps",
                )
            if run.info["data"]["world_size"] != self.dist.world:
                raise InvalidInputError(
                    f"{resume} ran on {run.info['data']['world_size']} process(es); resume it with as many (the data"
                    " order depends on it)"
                )
            return run
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return RunDir.create(out or Path("runs") / f"{stamp}-train-{info['model']['name']}", "train", info)

    def _train(
        self, meter: EnergyMeter, run: RunDir | None, models: Any, data: Prepared, resuming: bool
    ) -> dict[str, Any]:
        import torch

        from . import checkpoint
        from .qat import enable_qat_

        cfg, dist, device = self.config, self.dist, self.device
        fsdp = cfg.sync == "fsdp" and dist.active
        model = models.model.to(device)
        teacher = models.teacher.to(device) if models.teacher is not None else None
        eval_windows = self._eval_windows(data)
        masks = sparse_masks(model, cfg.keep_sparsity)
        if fsdp and (masks or cfg.qat):
            raise ConfigError(
                f"{{sync}} fsdp shards the weights, which {'holding pruned zeros' if masks else 'QAT'} needs whole; use"
                " {sync} ddp",
                field="sync",
            )
        param_masks = {n: p for n, p in model.named_parameters() if n in masks}  # before QAT renames them
        qat = enable_qat_(model, cfg.qat) if cfg.qat else None
        start, folder = 0, None
        if resuming:
            found = checkpoint.latest(run.path) if run is not None else None
            folder = ranks.broadcast(str(found) if found else None, dist)
            if folder is None:
                raise InvalidInputError("this run has no checkpoint to resume from; start a new run")
            start = checkpoint.load_weights(Path(folder), model)["step"]
            if start >= cfg.steps:
                raise ConfigError(
                    f"the run already has {start} steps; resume with {{steps}} larger than {start} to train on",
                    field="steps",
                )
        elif dist.is_main and eval_windows is not None:
            self._append(run, {"kind": "eval", "step": 0, **self._evaluate(model, eval_windows, teacher)})
        ranks.barrier(dist)
        wrapped = self._wrap(model)  # FSDP replaces the parameters: the optimizer is made after
        params = [p for p in model.parameters() if p.is_floating_point()]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        if folder is not None:
            checkpoint.load_optimizer(Path(folder), model, optimizer, scaler, fsdp=fsdp)
        cache = None
        run_path = ranks.broadcast(str(run.path) if run is not None else None, dist)
        if cfg.teacher_cache and run_path is not None:
            from .distill import TeacherCache

            cache = TeacherCache(Path(run_path) / "teacher-logits", tag=str(dist.rank))

        meter.begin_window("train")
        started = time.monotonic()
        pending: list[dict[str, Any]] = []
        epoch = None
        for step in range(start, cfg.steps):
            epoch_now, rows = batch_rows(step, len(data.rows), cfg.batch_size, dist.world, dist.rank, cfg.seed)
            if epoch is not None and epoch_now != epoch:
                self._flush(run, pending)
                pending = []
                self._epoch_record(run, epoch, complete=True)
            epoch = epoch_now
            batch = {k: v.to(device) for k, v in data.rows.batch(rows).items()}
            meter.begin_window("step")
            loss, parts = self._loss(wrapped, teacher, batch, rows, cache)
            grad_norm = optimizer_step(loss, params, optimizer, grad_clip=cfg.grad_clip, scaler=scaler)
            hold_zeros_(param_masks, masks)
            synced = (
                cfg.sync == "local-sgd" and dist.active and ((step + 1) % cfg.sync_every == 0 or step + 1 == cfg.steps)
            )
            if synced:
                average_parameters_(model)
            m = meter.end_window("step")
            label_tokens = int((batch["labels"][:, 1:] != IGNORE).sum())
            tokens = (
                int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].numel())
            )
            record = {
                "kind": "step",
                "step": step + 1,
                "epoch": epoch,
                "loss_sum": float(loss.detach()) * label_tokens,
                "label_tokens": label_tokens,
                "tokens": tokens,
                "energy_j": m.it_energy_j,
                "provenance": m.provenance,
                "duration_s": m.duration_s,
                "lr": cfg.lr,
                "grad_norm": grad_norm,
                **parts,
            }
            if cfg.sync == "local-sgd" and dist.active:
                record["synced"] = synced
                record["digest"] = params_digest(model)
            pending.append(record)
            if not (cfg.sync == "local-sgd" and dist.active) or synced:
                self._flush(run, pending)
                pending = []
                if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                    self._save(run, step + 1, epoch, model, optimizer, scaler)
            if math.isnan(float(loss.detach())):
                raise ConfigError(
                    f"the loss became NaN at step {step + 1}; lower {{lr}} or use {{precision}} bf16 / fp32", field="lr"
                )
        measurement = meter.end_window("train")
        wall_s = time.monotonic() - started
        self._flush(run, pending)
        if epoch is not None:
            self._epoch_record(
                run, epoch, complete=(cfg.steps % steps_per_epoch(len(data.rows), cfg.batch_size, dist.world) == 0)
            )
        self._save(run, cfg.steps, epoch, model, optimizer, scaler)
        return self._finish(run, model, models, teacher, eval_windows, measurement, wall_s, qat, masks, cache, start)

    # -- pieces ------------------------------------------------------------------------------

    def _wrap(self, model: Any) -> Any:
        cfg, dist = self.config, self.dist
        if not dist.active or cfg.sync == "local-sgd":
            return model
        if cfg.sync == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for layer in getattr(getattr(model, "model", model), "layers", []):
                fully_shard(layer)
            return fully_shard(model)
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _loss(
        self, model: Any, teacher: Any, batch: dict[str, Any], rows: list[int], cache: Any
    ) -> tuple[Any, dict[str, float]]:
        import torch

        cfg = self.config
        with autocast(cfg, self.device):
            out = model(**batch, use_cache=False)
            if teacher is None or cfg.alpha == 0:  # α = 0: the teacher's term has no weight, skip its forward pass
                return out.loss, {}
            from .distill import kd_loss

            teacher_logits = cache.get(rows) if cache is not None else None
            if teacher_logits is None:
                with torch.no_grad():
                    teacher_logits = teacher(
                        **{k: v for k, v in batch.items() if k != "labels"}, use_cache=False
                    ).logits
                if cache is not None:
                    cache.put(rows, teacher_logits)
            teacher_logits = teacher_logits.to(self.device)
        loss, parts = kd_loss(out.logits, teacher_logits, batch["labels"], alpha=cfg.alpha, temperature=cfg.temperature)
        return loss, parts

    def _eval_windows(self, data: Prepared) -> Any:
        from ..evaluate.perplexity import Protocol, make_windows

        cfg = self.config
        if not cfg.eval_windows:
            return None
        if data.eval_ids.numel() < cfg.seq_len:
            raise ConfigError(
                f"the text holds fewer than {cfg.seq_len} tokens to hold out for evaluation; give a longer text or"
                " {eval_windows} 0",
                field="eval_windows",
            )
        return make_windows(data.eval_ids, Protocol(cfg.seq_len, cfg.eval_windows * cfg.seq_len))

    def _evaluate(self, model: Any, windows: Any, teacher: Any = None) -> dict[str, Any]:
        from ..evaluate.quality import score

        was = model.training
        model.eval()
        try:
            result = {
                "ppl": _json_ppl(score(model, windows).result().ppl),
                "windows": int(windows.shape[0]),
                "seq_len": int(windows.shape[1]),
            }
            if teacher is not None:
                result["teacher_ppl"] = _json_ppl(score(teacher, windows).result().ppl)
            return result
        finally:
            model.train(was)

    def _append(self, run: RunDir | None, record: dict[str, Any]) -> None:
        if run is not None:
            run.append(record)

    def _flush(self, run: RunDir | None, pending: list[dict[str, Any]]) -> None:
        gathered = ranks.gather(pending, self.dist)
        if not self.dist.is_main:
            return
        for record in merge_steps(gathered):
            self._append(run, record)
            self.progress(
                f"step {record['step']}/{self.config.steps}  loss {record['loss']:.4f} "
                f" {record['j_per_token'] or float('nan'):.4g} J/token ({record['provenance']})"
            )

    def _epoch_record(self, run: RunDir | None, epoch: int, complete: bool) -> None:
        if run is None:
            return
        steps = [r for r in run.records() if r.get("kind") == "step" and r.get("epoch") == epoch]
        tokens = sum(r["tokens"] for r in steps)
        energy = sum(r["energy_j"] for r in steps)
        labels = sum(r["label_tokens"] for r in steps)
        self._append(
            run,
            {
                "kind": "epoch",
                "epoch": epoch,
                "complete": complete,
                "steps": len(steps),
                "tokens": tokens,
                "energy_j": energy,
                "j_per_token": energy / tokens if tokens else None,
                "loss": sum(r["loss"] * r["label_tokens"] for r in steps) / max(labels, 1),
                "provenance": worst_provenance(r["provenance"] for r in steps) if steps else "none",
            },
        )

    def _save(self, run: RunDir | None, step: int, epoch: Any, model: Any, optimizer: Any, scaler: Any) -> None:
        from . import checkpoint

        fsdp = self.config.sync == "fsdp" and self.dist.active
        if run is not None or fsdp:  # FSDP: every rank takes part in gathering the shards
            checkpoint.save(
                run.path if run is not None else None, step, model, optimizer, scaler, {"epoch": epoch}, fsdp=fsdp
            )
        ranks.barrier(self.dist)

    def _finish(
        self, run, model, models, teacher, eval_windows, measurement, wall_s, qat, masks, cache, start
    ) -> dict[str, Any]:
        from ..compress.store import write as write_compressed
        from .qat import convert_

        cfg, dist = self.config, self.dist
        fsdp = cfg.sync == "fsdp" and dist.active
        measurements = ranks.gather(measurement.to_dict(), dist)
        summary: dict[str, Any] = {"kind": "summary", "steps": cfg.steps, "resumed_from_step": start, "wall_s": wall_s}
        # Collectives first: a sharded model evaluates and gathers its weights on every rank.
        eval_after = (
            self._evaluate(model, eval_windows) if eval_windows is not None and (dist.is_main or fsdp) else None
        )
        full_weights = None
        if fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            full_weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not dist.is_main:
            return summary
        records = run.records() if run else []
        steps = [r for r in records if r.get("kind") == "step"]
        tokens = sum(r["tokens"] for r in steps)
        energy = sum(r["energy_j"] for r in steps)
        summary.update(
            {
                "tokens": tokens,
                "energy_j": energy,
                "j_per_token": energy / tokens if tokens else None,
                "first_loss": steps[0]["loss"] if steps else None,
                "last_loss": steps[-1]["loss"] if steps else None,
                "provenance": worst_provenance(m["provenance"] for m in measurements),
                "run_it_energy_j": sum(m["it_energy_j"] for m in measurements),
                "measurements": measurements,
                "held_zeros": int(sum(int(m.sum()) for m in masks.values())),
            }
        )
        if teacher is not None and cache is not None:
            summary["teacher_cache"] = {"hits": cache.hits, "misses": cache.misses}
        if eval_windows is not None:
            summary["eval_after"] = eval_after
            before = [r for r in records if r.get("kind") == "eval"]
            summary["eval_before"] = {k: v for k, v in before[0].items() if k != "kind"} if before else None
        if qat is not None:
            assert cfg.qat is not None  # qat is set only when the config asks for it
            summary["qat"] = {**qat, "convert": convert_(model, cfg.qat)["name"]}
            if eval_windows is not None:
                summary["eval_after_convert"] = self._evaluate(model, eval_windows)
        if run is not None:
            out = run.path / "model"  # replaced whole: a resumed run writes its final model again
            from ..fileio import atomic_folder
            from ..models.load import save_plain

            with atomic_folder(out) as tmp:
                if getattr(model.config, "wattlm_compression", None):
                    write_compressed(model, tmp, models.tokenizer)
                else:
                    save_plain(model, tmp, models.tokenizer, state_dict=full_weights)
            summary["model_out"] = str(out)
            self._append(run, summary)
        return summary
