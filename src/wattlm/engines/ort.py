"""ONNX Runtime GenAI as a second CPU engine: a model in memory → onnxruntime-genai's model builder
(fp32, or int8/int4 weights in MatMulNBits blocks of 32) → the same calls the harness makes on
llama.cpp: every position's logits for a window, a prefill, greedy decoding of a batch.

Why the builder runs in a subprocess: it is a script-sized converter that prints progress, holds the
whole graph in memory and may leave large temporary files; a child process returns all of that to
the OS when it ends, and its failure is one message here instead of a half-built state. It reads a
plain safetensors folder written here (no network: HF_HUB_OFFLINE=1, no remote code).

Block 32 because 128 (the builder's usual choice elsewhere) does not divide 576, SmolLM2's width;
accuracy level 4 (int8 activations in the int4/int8 matmuls, the CPU default) is recorded. The
threads are set in genai_config.json's session options (intra-op = the run's threads, inter-op 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, WattlmError

INSTALL = "pip install 'wattlm[onnx]' (onnxruntime-genai, onnx and onnx-ir)"
PRECISIONS = ("fp32", "int8", "int4")
BLOCK_SIZE = 32
ACCURACY_LEVEL = 4  # int8 activations in MatMulNBits: the CPU default, and what llama.cpp's x86 kernels do too


def lib() -> Any:
    try:
        import onnxruntime_genai
    except ImportError as e:
        raise InvalidInputError(f"the ONNX Runtime engine needs onnxruntime-genai: {INSTALL}") from e
    return onnxruntime_genai


def _builder_args(source: Path, out: Path, cache: Path, precision: str, head_int8: bool) -> list[str]:
    args = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out)]
    args += ["-p", precision, "-e", "cpu", "-c", str(cache), "--extra_options", "hf_token=false", "hf_remote=false"]
    if precision != "fp32":
        args += [f"block_size={BLOCK_SIZE}", f"accuracy_level={ACCURACY_LEVEL}"]
    if head_int8:
        args.append("matmul_mixed_precision=last_matmul:int8")
    return args


def _set_threads(folder: Path, threads: int) -> None:
    path = folder / "genai_config.json"
    config = json.loads(path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = threads
    options["inter_op_num_threads"] = 1
    path.write_text(json.dumps(config, indent=2))


def build(model: Any, tokenizer: Any, out: Path, precision: str, *, threads: int, head_int8: bool = False) -> dict:
    """Write `model` (a plain float transformers causal LM) as an onnxruntime-genai folder at `out`."""
    from ..models.load import save_plain

    if precision not in PRECISIONS:
        raise InvalidInputError(f"ONNX precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    lib()
    with tempfile.TemporaryDirectory(prefix="wattlm-ort-") as tmp:
        source = Path(tmp) / "hf"
        source.mkdir()
        save_plain(model.float(), source, tokenizer)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        done = subprocess.run(
            _builder_args(source, out, Path(tmp) / "cache", precision, head_int8),
            capture_output=True,
            text=True,
            env=env,
        )
    if done.returncode != 0 or not (out / "genai_config.json").is_file():
        tail = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()][-1:] or ["no output"]
        raise WattlmError(f"onnxruntime-genai's model builder could not convert the model: {tail[0]}")
    _set_threads(out, threads)
    return {
        "folder": str(out),
        "type": precision,
        "block_size": BLOCK_SIZE if precision != "fp32" else None,
        "accuracy_level": ACCURACY_LEVEL if precision != "fp32" else None,
        "output_layer": "int8" if head_int8 else precision,
        "bytes": sum(p.stat().st_size for p in out.glob("model.onnx*")),
        "builder": "onnxruntime_genai.models.builder",
    }


class OrtModel:
    """An onnxruntime-genai model folder on the CPU, with the calls the bench harness makes."""

    engine = "ort"

    def __init__(self, folder: str | Path, *, threads: int, params_total: int | None = None, cleanup: Any = None):
        og = lib()
        self.folder, self.threads, self._cleanup = Path(folder), threads, cleanup
        self.params_total = params_total
        self.compression: list[dict[str, Any]] = []
        try:
            config = og.Config(str(self.folder))
            config.clear_providers()  # the CPU
            self._model = og.Model(config)
        except Exception as e:  # the library raises plain RuntimeError for every load failure
            raise InvalidInputError(f"onnxruntime-genai could not load {self.folder}: {e}") from e
        self.n_vocab = int(json.loads((self.folder / "genai_config.json").read_text())["model"]["vocab_size"])

    def _generator(self, batch: int, max_length: int) -> Any:
        og = lib()
        params = og.GeneratorParams(self._model)
        params.set_search_options(max_length=max_length, batch_size=batch, do_sample=False)
        return og.Generator(self._model, params)

    def _check_ids(self, ids: list[int]) -> None:
        if ids and (min(ids) < 0 or max(ids) >= self.n_vocab):
            raise InvalidInputError(f"token id {max(ids)} is outside the model's vocabulary of {self.n_vocab}")

    def window_logits(self, ids: Any) -> Any:
        """[seq] token ids → [seq, vocab] float32 logits (torch) at every position, one pass."""
        import numpy as np
        import torch

        tokens = np.asarray(ids.reshape(1, -1).tolist(), dtype=np.int32)
        self._check_ids(tokens.reshape(-1).tolist())
        generator = self._generator(1, tokens.shape[1] + 1)
        generator.append_tokens(tokens)
        logits = np.asarray(generator.get_output("logits"), dtype=np.float32)  # [1, seq, vocab]
        return torch.from_numpy(logits[0].copy())

    def _rows(self, prompt: Any) -> Any:
        import numpy as np

        rows = np.asarray(prompt.tolist(), dtype=np.int32)
        self._check_ids(rows.reshape(-1).tolist())
        return rows

    def prefill_call(self, prompt: Any) -> Any:
        """One pass over `prompt` ([batch, len] ids) that fills a fresh KV cache; returns the next tokens."""
        import numpy as np

        rows = self._rows(prompt)

        def call() -> list[int]:
            generator = self._generator(rows.shape[0], rows.shape[1] + 1)
            generator.append_tokens(rows)
            return np.asarray(generator.get_logits())[:, -1].argmax(-1).tolist()

        return call

    def generate_call(self, prompt: Any, new_tokens: int) -> Any:
        """Greedy decoding of every row with the engine's generator: the prefill gives token 1, then
        one step per token; returns [batch, new_tokens]."""
        import torch

        rows = self._rows(prompt)

        def call() -> Any:
            generator = self._generator(rows.shape[0], rows.shape[1] + new_tokens)
            generator.append_tokens(rows)
            out = []
            for _ in range(new_tokens):
                generator.generate_next_token()
                out.append(generator.get_next_tokens().tolist())
            return torch.tensor(out).T

        return call

    def thread_settings(self) -> dict[str, Any]:
        return {"ort_intra_op_num_threads": self.threads, "ort_inter_op_num_threads": 1}

    def stats(self) -> dict[str, Any]:
        return {
            "params_total": self.params_total,
            "params_nonzero": None,
            "model_bytes": sum(p.stat().st_size for p in self.folder.glob("model.onnx*")),
        }

    def close(self) -> None:
        self._model = None
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
