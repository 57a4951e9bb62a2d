"""What a training run starts from: the model (or student and teacher), the text, and the device checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, InvalidInputError
from ..models.load import ModelSpec, load_model, resolve_model
from .config import TrainConfig


@dataclass
class Models:
    model: Any  # the model that trains (the student when distilling)
    tokenizer: Any
    spec: ModelSpec
    teacher: Any = None
    teacher_spec: ModelSpec | None = None


def check_device(config: TrainConfig, device: Any) -> None:
    if config.precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"{{precision}} fp16 trains with a gradient scaler on CUDA GPUs; on {device.type} use {{precision}} bf16"
            " (or fp32)",
            field="precision",
        )


def _load(spec: ModelSpec, config: TrainConfig) -> tuple[Any, Any]:
    if spec.kind == "compressed":
        from ..compress.qlinear import QuantLinear
        from ..compress.store import load

        model, tokenizer = load(spec.location)
        if any(isinstance(m, QuantLinear) for m in model.modules()):
            raise ConfigError(
                f"{spec.location} is quantized ({spec.source_format}); integer weights do not train: fine-tune the fp32"
                " model with {qat} instead",
                field="model",
            )
        if tokenizer is None:
            raise InvalidInputError(
                f"{spec.location} has no tokenizer files; re-run wattlm compress (it saves the tokenizer)"
            )
        return model, tokenizer
    return load_model(spec, dtype="fp32", trust_remote_code=config.trust_remote_code, offline=config.offline)


def load_models(config: TrainConfig) -> Models:
    """fp32 weights on the CPU (the loop moves them): mixed precision is autocast, not a cast."""
    from .distill import check_vocab, make_student

    if not config.distilling:
        spec = resolve_model(config.model, offline=config.offline)
        model, tokenizer = _load(spec, config)
        return Models(model, tokenizer, spec)
    teacher_spec = resolve_model(config.teacher, offline=config.offline)
    teacher, tokenizer = _load(teacher_spec, config)
    if config.student is not None:
        student = make_student(teacher, config.student)
        spec = ModelSpec(
            f"{teacher_spec.name}-{config.student}", "student", teacher_spec.location, teacher_spec.source_format
        )
        student_tokenizer = tokenizer
    else:
        if config.model is None:
            raise ConfigError(
                "{teacher} needs a student: {model} STUDENT, or {student} half-depth to build one from the teacher",
                field="teacher",
            )
        spec = resolve_model(config.model, offline=config.offline)
        student, student_tokenizer = _load(spec, config)
    check_vocab(tokenizer, student_tokenizer, teacher, student)
    teacher.eval().requires_grad_(False)
    return Models(student, student_tokenizer, spec, teacher, teacher_spec)
