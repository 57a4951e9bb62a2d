"""Knowledge distillation (Hinton et al. 2015): a student learns the teacher's softened distribution.

    loss = α · T² · KL(p_teacher^T ‖ p_student^T) + (1 − α) · CE(student, labels)

p^T = softmax(logits / T); the T² keeps the soft term's gradient on the scale of the hard term's as
T changes. KL and CE are means over the tokens that carry a label (packing and padding leave some
without). The student is another model with the same tokenizer, or one built from the teacher:
half-depth / depth<K> keeps K evenly spaced decoder layers (DistilBERT's every-other-layer start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidInputError
from .data import IGNORE


def kd_loss(
    student_logits: Any, teacher_logits: Any, labels: Any, *, alpha: float, temperature: float
) -> tuple[Any, dict[str, float]]:
    """The distillation loss over positions whose next token has a label; logits [B, T, V], labels [B, T]
    (unshifted, as Hugging Face models take them)."""
    import torch.nn.functional as F

    s = student_logits[:, :-1].float()
    t = teacher_logits[:, :-1].float()
    y = labels[:, 1:]
    keep = y != IGNORE  # [B, T-1]
    s, t, y = s[keep], t[keep], y[keep]  # [N, V], [N, V], [N]
    log_ps = F.log_softmax(s / temperature, dim=-1)
    log_pt = F.log_softmax(t / temperature, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1).mean()
    ce = F.cross_entropy(s, y)
    loss = alpha * temperature**2 * kl + (1 - alpha) * ce
    return loss, {"kl": float(kl.detach()), "ce": float(ce.detach())}


def check_vocab(teacher_tokenizer: Any, student_tokenizer: Any, teacher: Any, student: Any) -> None:
    """Distillation compares distributions token by token: both sides must share one vocabulary."""
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if t_vocab != s_vocab:
        differ = len(set(t_vocab.items()) ^ set(s_vocab.items()))
        raise InvalidInputError(
            f"the teacher's and the student's tokenizers differ ({len(t_vocab)} vs {len(s_vocab)} tokens, {differ}"
            " entries differ); distil into a student with the teacher's tokenizer"
        )
    t_out, s_out = teacher.get_output_embeddings().weight.shape[0], student.get_output_embeddings().weight.shape[0]
    if t_out != s_out:
        raise InvalidInputError(
            f"the teacher predicts {t_out} tokens and the student {s_out}; resize the student's embeddings to the"
            " teacher's vocabulary"
        )


def student_layers(name: str, layers: int) -> list[int]:
    """Indices of the teacher's decoder layers a `half-depth` / `depth<K>` student keeps (evenly spaced, first kept)."""
    keep = (layers + 1) // 2 if name == "half-depth" else int(name.removeprefix("depth"))
    if not 1 <= keep < layers:
        raise ConfigError(
            f"{{student}} {name}: the teacher has {layers} decoder layers; keep between 1 and {layers - 1}",
            field="student",
        )
    return sorted({round(i * (layers - 1) / max(keep - 1, 1)) for i in range(keep)}) if keep > 1 else [0]


def make_student(teacher: Any, name: str) -> Any:
    """A copy of `teacher` with only the layers `student_layers` picks."""
    import copy

    from ..compress.capture import decoder_layers
    from ..compress.structured import drop_layers_

    student = copy.deepcopy(teacher)
    n = len(decoder_layers(student))
    kept = student_layers(name, n)
    drop_layers_(student, [i for i in range(n) if i not in kept])
    return student


class TeacherCache:
    """The teacher's logits of each training row, kept after its first pass (in bf16, on disk), so
    later epochs skip the teacher's forward pass."""

    def __init__(self, folder: Path, tag: str = "0") -> None:
        self.folder, self.tag = folder, tag
        folder.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def _path(self, row: int) -> Path:
        return self.folder / f"row{row:07d}.safetensors"

    def get(self, rows: list[int]) -> Any | None:
        import torch
        from safetensors.torch import load_file

        if not all(self._path(r).is_file() for r in rows):
            return None
        self.hits += 1
        return torch.stack([load_file(str(self._path(r)))["logits"] for r in rows])

    def put(self, rows: list[int], logits: Any) -> None:
        import os

        from safetensors.torch import save_file

        self.misses += 1
        for r, x in zip(rows, logits):
            path = self._path(r)
            if not path.is_file():
                tmp = path.with_suffix(f".{self.tag}.tmp")  # written whole, then renamed: a crash leaves no half file
                save_file({"logits": x.detach().to("cpu").bfloat16().contiguous()}, str(tmp))
                os.replace(tmp, path)
