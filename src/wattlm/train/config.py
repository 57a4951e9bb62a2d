"""What a training run does: one validated, versioned dataclass that round-trips to JSON.

Every choice that changes the numbers (precision, data handling, distillation, QAT, how ranks
synchronise) is here, so a run folder says exactly how it was made and `--resume` can refuse a
resumed run whose options differ.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, InvalidInputError

SCHEMA = "wattlm.train/1"
PRECISIONS = ("fp32", "bf16", "fp16")
SYNCS = ("ddp", "local-sgd", "fsdp")
DEDUPS = ("none", "exact", "near")
DOCUMENTS = ("paragraphs", "lines", "whole")
QAT_PATTERN = r"int8|int4-g(\d+)"
STUDENT_PATTERN = r"half-depth|depth(\d+)"


@dataclass(frozen=True)
class TrainConfig:
    """Options of `wattlm train` (and `wattlm.train.run_train`).

    Args:
        model: hub id, folder or .gguf; None = the embedded default. With `teacher`, the student's
            starting point when `student` is None.
        precision: fp32; bf16 (autocast, fp32 master weights); fp16 (autocast + gradient scaler, GPU only).
        steps: optimizer steps in all (a resumed run continues up to this number).
        batch_size: sequences per step and rank; seq_len: tokens per sequence.
        eval_windows: windows of `seq_len` held out from training and scored before and after.
        documents: how the text splits into documents: blank-line paragraphs, lines, or one document.
        dedup: none; exact (same text after whitespace and case folding); near (MinHash Jaccard ≥
            `near_threshold` over word 5-grams).
        pack: concatenate documents into full rows (attention kept inside each document); else one
            document per row, padded.
        teacher: a model to distil from; `student` builds the student from it (half-depth, depthK)
            unless `model` names one. Loss α·T²·KL(teacher‖student) + (1−α)·CE.
        teacher_cache: keep the teacher's logits of each row after its first pass (epochs > 1 then
            skip the teacher's forward pass).
        qat: fake-quantize weights during training (int8 per row, int4-g<G> groups) and convert at the end.
        keep_sparsity: hold the zeros of pruned weights at zero (pruning recovery). None (auto): when
            the model's wattlm compression history has a pruning step; True: every matrix with ≥ 1 %
            exact zeros; False: never.
        sync: under torchrun, ddp (gradients all-reduced each step), local-sgd (parameters averaged
            every `sync_every` steps), fsdp (weights, gradients and optimizer state sharded with torch's fully_shard).
    """

    model: str | None = None
    text: str | None = None
    dataset: str | None = None
    precision: str = "fp32"
    steps: int = 20
    lr: float = 5e-5
    batch_size: int = 4
    seq_len: int = 512
    seed: int = 0
    grad_clip: float = 1.0
    eval_windows: int = 8
    documents: str = "paragraphs"
    dedup: str = "exact"
    near_threshold: float = 0.8
    pack: bool = True
    teacher: str | None = None
    student: str | None = None
    alpha: float = 0.5
    temperature: float = 2.0
    teacher_cache: bool = False
    qat: str | None = None
    keep_sparsity: bool | None = None
    sync: str = "ddp"
    sync_every: int = 8
    save_every: int = 0
    device: str = "auto"
    offline: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        def fail(message: str, name: str) -> None:
            raise ConfigError(message, field=name, value=getattr(self, name))

        for name, options in (("precision", PRECISIONS), ("sync", SYNCS), ("dedup", DEDUPS), ("documents", DOCUMENTS)):
            if getattr(self, name) not in options:
                fail(f"{{{name}}} {getattr(self, name)!r} is not one of {', '.join(options)}", name)
        for name in ("steps", "batch_size", "seq_len", "sync_every"):
            if getattr(self, name) < 1:
                fail(f"{{{name}}} must be at least 1, got {getattr(self, name)}", name)
        for name in ("eval_windows", "save_every"):
            if getattr(self, name) < 0:
                fail(f"{{{name}}} must be 0 or more, got {getattr(self, name)}", name)
        if not self.lr > 0:
            fail(f"{{lr}} must be positive, got {self.lr}", "lr")
        if not self.grad_clip >= 0:
            fail(f"{{grad_clip}} must be 0 (off) or positive, got {self.grad_clip}", "grad_clip")
        if not 0.0 < self.near_threshold <= 1.0:
            fail(f"{{near_threshold}} must lie in (0, 1], got {self.near_threshold}", "near_threshold")
        if not 0.0 <= self.alpha <= 1.0:
            fail(f"{{alpha}} must lie in [0, 1], got {self.alpha}", "alpha")
        if not self.temperature > 0:
            fail(f"{{temperature}} must be positive, got {self.temperature}", "temperature")
        if self.text is not None and self.dataset is not None:
            fail("give {text} or {dataset}, not both", "dataset")
        if self.qat is not None and not re.fullmatch(QAT_PATTERN, self.qat):
            fail(f"{{qat}} {self.qat!r} is not int8 or int4-g<G> (e.g. int4-g64)", "qat")
        if self.student is not None:
            if self.teacher is None:
                fail("{student} builds a student from {teacher}: give {teacher} too", "student")
            if not re.fullmatch(STUDENT_PATTERN, self.student):
                fail(f"{{student}} {self.student!r} is not half-depth or depth<K> (e.g. depth15)", "student")
        if self.teacher_cache and self.teacher is None:
            fail("{teacher_cache} needs {teacher}", "teacher_cache")

    @property
    def distilling(self) -> bool:
        return self.teacher is not None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if data.get("schema") != SCHEMA:
            raise InvalidInputError(
                f"training config schema {data.get('schema')!r} is not {SCHEMA!r}: written by another wattlm version"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names - {"schema"}
        if unknown:
            raise InvalidInputError(f"unknown training option(s) {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in data.items() if k in names})
