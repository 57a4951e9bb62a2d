"""llama.cpp through llama-cpp-python's C API (ctypes): quantize a GGUF, load it, and make the calls
the bench harness makes — the logits of a window, a prefill, greedy decoding of a batch.

Why the C API and not `llama_cpp.Llama`: `Llama` computes logits for every prompt position or for
none (`logits_all`), keeps a Python-side token history and sampler, and decodes one sequence at a
time. The bench needs all positions when scoring, the last one only when serving, and a batch of
independent sequences when decoding — the same work the transformers path does, so the two are
compared on equal terms. Each decode call is one `llama_decode` of the whole batch.

The object returned by `load` is an *engine model*: it has `engine`, `window_logits`,
`prefill_call`, `generate_call`, `stats` and `close`, which the harness calls instead of a
transformers model's forward (see evaluate.quality.score and evaluate.speed).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, WattlmError

INSTALL = "pip install 'wattlm[llamacpp]' (it builds llama.cpp: about 4 minutes on 2 cores)"
# llama.cpp file types by the names its quantize tool uses (gguf.LlamaFileType without MOSTLY_)
QUANTS = (
    "f32",
    "f16",
    "q8_0",
    "q6_k",
    "q5_k_m",
    "q5_k_s",
    "q5_1",
    "q5_0",
    "q4_k_m",
    "q4_k_s",
    "q4_1",
    "q4_0",
    "iq4_nl",
    "q3_k_l",
    "q3_k_m",
    "q3_k_s",
    "q2_k",
)
_LOG: list[str] = []  # llama.cpp's recent log lines: the reason behind a failed load or quantize


def check_quant(quant: str) -> str:
    if quant not in QUANTS:
        raise InvalidInputError(f"GGUF type {quant!r} is not one of {', '.join(QUANTS)}")
    return quant


def file_type(quant: str) -> int:
    import gguf

    check_quant(quant)
    return int(gguf.LlamaFileType.ALL_F32 if quant == "f32" else gguf.LlamaFileType[f"MOSTLY_{quant.upper()}"])


@functools.cache
def lib() -> Any:
    """The llama_cpp module, with its backend started and its log kept out of the terminal."""
    try:
        import llama_cpp
    except ImportError as e:
        raise InvalidInputError(f"the llama.cpp engine needs llama-cpp-python: {INSTALL}") from e

    @llama_cpp.llama_log_callback
    def keep(level: int, text: bytes, user_data: Any) -> None:
        _LOG.append(text.decode("utf-8", "replace"))
        del _LOG[:-20]

    llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
    lib.callback = keep  # type: ignore[attr-defined]  # ctypes callbacks must outlive their registration
    llama_cpp.llama_backend_init()
    return llama_cpp


def _last_error() -> str:
    lines = [l.strip() for l in "".join(_LOG).splitlines() if l.strip()]
    errors = [l for l in lines if "error" in l.lower() or "failed" in l.lower()]
    return (errors or lines or ["no message"])[-1]


def quantize(source: Path, target: Path, quant: str, threads: int) -> None:
    """llama.cpp's own quantizer (the `llama-quantize` tool's code), float GGUF → `quant`."""
    ll = lib()
    params = ll.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = file_type(quant)
    _LOG.clear()
    if ll.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise WattlmError(f"llama.cpp could not quantize {source} to {quant}: {_last_error()}")


class LlamaCppModel:
    """A GGUF loaded in llama.cpp on the CPU, with `threads` threads."""

    engine = "llamacpp"

    def __init__(self, path: str | Path, *, threads: int, cleanup: Any = None) -> None:
        ll = lib()
        self.path, self.threads, self._cleanup = Path(path), threads, cleanup
        self._model: Any = None
        self._ctx: Any = None
        self._ctx_shape: tuple[int, int, int] = (0, 0, 0)
        self.compression: list[dict[str, Any]] = []  # what was done to the model before export
        params = ll.llama_model_default_params()
        params.n_gpu_layers = 0
        _LOG.clear()
        self._model = ll.llama_model_load_from_file(str(self.path).encode(), params)
        if not self._model:
            raise InvalidInputError(
                f"llama.cpp could not load {self.path} ({_last_error()}); re-export it or check the file"
            )
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))

    # -- contexts and batches ------------------------------------------------------------------------

    def _context(self, n_seq: int, n_ctx: int, n_batch: int) -> Any:
        """A context holding `n_seq` sequences of up to `n_ctx` tokens in all, `n_batch` tokens per
        decode call (processed as one graph, as transformers does). Reused while big enough."""
        ll = lib()
        have = self._ctx_shape
        if self._ctx is not None and have[0] >= n_seq and have[1] >= n_ctx and have[2] >= n_batch:
            ll.llama_memory_clear(ll.llama_get_memory(self._ctx), True)
            return self._ctx
        self._free_context()
        params = ll.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = n_ctx, n_batch, n_batch, n_seq
        params.n_threads = params.n_threads_batch = self.threads
        params.kv_unified = True  # the sequences share one cache of n_ctx cells
        params.no_perf = True
        _LOG.clear()
        ctx = ll.llama_init_from_model(self._model, params)
        if not ctx:
            raise WattlmError(
                f"llama.cpp could not create a context of {n_ctx} tokens for {self.path}: {_last_error()}"
            )
        self._ctx, self._ctx_shape = ctx, (n_seq, n_ctx, n_batch)
        return ctx

    def _decode(self, ctx: Any, tokens: list[int], positions: list[int], seqs: list[int], outputs: list[bool]) -> None:
        ll = lib()
        batch = ll.llama_batch_init(len(tokens), 0, 1)
        try:
            batch.n_tokens = len(tokens)
            for i, (t, p, s, o) in enumerate(zip(tokens, positions, seqs, outputs, strict=True)):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, p, 1, o
                batch.seq_id[i][0] = s
            code = ll.llama_decode(ctx, batch)
        finally:
            ll.llama_batch_free(batch)
        if code != 0:
            raise WattlmError(f"llama_decode failed with code {code} on {self.path}: {_last_error()}")

    def _row(self, ctx: Any, index: int) -> Any:
        import numpy as np

        return np.ctypeslib.as_array(lib().llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))

    def _check_ids(self, ids: list[int]) -> None:
        if ids and (min(ids) < 0 or max(ids) >= self.n_vocab):
            raise InvalidInputError(f"token id {max(ids)} is outside {self.path.name}'s vocabulary of {self.n_vocab}")

    # -- what the harness calls ----------------------------------------------------------------------

    def window_logits(self, ids: Any) -> Any:
        """[seq] token ids → [seq, vocab] float32 logits (torch), every position, one decode call."""
        import numpy as np
        import torch

        tokens = [int(t) for t in ids.reshape(-1).tolist()]
        self._check_ids(tokens)
        n = len(tokens)
        ctx = self._context(1, n, n)
        self._decode(ctx, tokens, list(range(n)), [0] * n, [True] * n)
        logits = np.ctypeslib.as_array(lib().llama_get_logits(ctx), shape=(n, self.n_vocab)).copy()
        return torch.from_numpy(logits)

    def _prefill(self, ctx: Any, rows: list[list[int]]) -> list[int]:
        tokens, positions, seqs, outputs, last = [], [], [], [], []
        for s, row in enumerate(rows):
            tokens += row
            positions += list(range(len(row)))
            seqs += [s] * len(row)
            outputs += [False] * (len(row) - 1) + [True]
            last.append(len(tokens) - 1)
        self._decode(ctx, tokens, positions, seqs, outputs)
        return [int(self._row(ctx, i).argmax()) for i in last]

    def _serving_context(self, rows: list[list[int]], new_tokens: int) -> Any:
        n_seq, length = len(rows), len(rows[0])
        return self._context(n_seq, n_seq * (length + new_tokens), n_seq * length)

    def prefill_call(self, prompt: Any) -> Any:
        """One pass over `prompt` ([batch, len] ids) that fills the KV cache; returns the next tokens."""
        rows = [[int(t) for t in r] for r in prompt.tolist()]
        self._check_ids([t for r in rows for t in r])

        def call() -> list[int]:
            return self._prefill(self._serving_context(rows, 0), rows)

        return call

    def generate_call(self, prompt: Any, new_tokens: int) -> Any:
        """Greedy decoding of every row: the prefill makes token 1, then one decode call per token."""
        import torch

        rows = [[int(t) for t in r] for r in prompt.tolist()]
        self._check_ids([t for r in rows for t in r])
        length = len(rows[0])

        def call() -> Any:
            ctx = self._serving_context(rows, new_tokens)
            token = self._prefill(ctx, rows)
            generated = [token]
            for step in range(new_tokens - 1):
                self._decode(ctx, token, [length + step] * len(rows), list(range(len(rows))), [True] * len(rows))
                token = [int(self._row(ctx, s).argmax()) for s in range(len(rows))]
                generated.append(token)
            return torch.tensor(generated).T  # [batch, new_tokens]

        return call

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's tokenization of `text`, without BOS/EOS."""
        return _tokenize(self._vocab, text)

    def thread_settings(self) -> dict[str, Any]:
        """What the runtime was told: llama.cpp's decode and batch threads (both `threads`)."""
        return {"n_threads": self.threads, "n_threads_batch": self.threads}

    def stats(self) -> dict[str, Any]:
        ll = lib()
        return {
            "params_total": int(ll.llama_model_n_params(self._model)),
            "params_nonzero": None,
            "model_bytes": int(ll.llama_model_size(self._model)),
        }

    def _free_context(self) -> None:
        if self._ctx is not None:
            lib().llama_free(self._ctx)
            self._ctx, self._ctx_shape = None, (0, 0, 0)

    def close(self) -> None:
        self._free_context()
        if self._model:
            lib().llama_model_free(self._model)
            self._model = None
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


def _tokenize(vocab: Any, text: str) -> list[int]:
    """Token ids of `text` (no BOS/EOS, special tokens as text); every token is at least one byte."""
    ll = lib()
    data = text.encode("utf-8")
    size = len(data) + 8
    out = (ll.llama_token * size)()
    n = ll.llama_tokenize(vocab, data, len(data), out, size, False, False)
    if n < 0:
        raise WattlmError(f"llama.cpp's tokenizer needs {-n} slots for {len(data)} bytes")
    return list(out[:n])


def vocab_only_tokenize(path: Path, text: str) -> list[int]:
    """Tokenize with just the vocabulary of the GGUF at `path` (no weights loaded)."""
    ll = lib()
    params = ll.llama_model_default_params()
    params.vocab_only = True
    model = ll.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise WattlmError(f"llama.cpp could not read the vocabulary of {path}: {_last_error()}")
    try:
        return _tokenize(ll.llama_model_get_vocab(model), text)
    finally:
        ll.llama_model_free(model)
