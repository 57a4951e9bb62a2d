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

from ..errors import InvalidInputError

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
        def one_of(value: str, options: tuple[str, ...], option: str) -> None:
            if value not in options:
                raise InvalidInputError(f"{option} {value!r} is not one of {', '.join(options)}")

        one_of(self.precision, PRECISIONS, "--precision")
        one_of(self.sync, SYNCS, "--sync")
        one_of(self.dedup, DEDUPS, "--dedup")
        one_of(self.documents, DOCUMENTS, "--documents")
        for option, value in (("--steps", self.steps), ("--batch-size", self.batch_size), ("--seq-len", self.seq_len), ("--sync-every", self.sync_every)):
            if value < 1:
                raise InvalidInputError(f"{option} must be at least 1, got {value}")
        for option, value in (("--eval-windows", self.eval_windows), ("--save-every", self.save_every)):
            if value < 0:
                raise InvalidInputError(f"{option} must be 0 or more, got {value}")
        if not self.lr > 0:
            raise InvalidInputError(f"--lr must be positive, got {self.lr}")
        if not self.grad_clip >= 0:
            raise InvalidInputError(f"--grad-clip must be 0 (off) or positive, got {self.grad_clip}")
        if not 0.0 < self.near_threshold <= 1.0:
            raise InvalidInputError(f"--near-threshold must lie in (0, 1], got {self.near_threshold}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidInputError(f"--alpha must lie in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise InvalidInputError(f"--temperature must be positive, got {self.temperature}")
        if self.text is not None and self.dataset is not None:
            raise InvalidInputError("give --text or --dataset, not both")
        if self.qat is not None and not re.fullmatch(QAT_PATTERN, self.qat):
            raise InvalidInputError(f"--qat {self.qat!r} is not int8 or int4-g<G> (e.g. int4-g64)")
        if self.student is not None:
            if self.teacher is None:
                raise InvalidInputError("--student builds a student from --teacher: give --teacher too")
            if not re.fullmatch(STUDENT_PATTERN, self.student):
                raise InvalidInputError(f"--student {self.student!r} is not half-depth or depth<K> (e.g. depth15)")
        if (self.teacher_cache or self.student) and self.teacher is None:
            raise InvalidInputError("--teacher-cache needs --teacher")

    @property
    def distilling(self) -> bool:
        return self.teacher is not None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if data.get("schema") != SCHEMA:
            raise InvalidInputError(f"training config schema {data.get('schema')!r} is not {SCHEMA!r}: written by another wattlm version")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names - {"schema"}
        if unknown:
            raise InvalidInputError(f"unknown training option(s) {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in data.items() if k in names})
