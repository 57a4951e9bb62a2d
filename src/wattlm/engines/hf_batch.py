"""A transformers causal LM serving many sequences, with the interface of `LlamaCppBatch`, for the
serving loop: each call to `decode` runs the step's decode tokens as one batched forward and each
prompt chunk as a forward of its own.

Each sequence keeps its own KV cache. For the batched decode forward the caches are left-padded to
the longest and stacked (with an attention mask over the padding), then split back: batches are
formed at step boundaries, so requests still join and leave at any step. The copy costs
O(layers × batch × context) per step — small for the models a CPU serves; on a GPU, transformers'
own continuous batching (paged attention) would avoid it. Models whose layers differ in cache shape
(sliding-window hybrids) are not supported by this path.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import InvalidInputError
from .batch import BatchItem


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, inverted: each of its 256 characters → the byte it stands for."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class HFBatch:
    engine = "hf"
    batching = (
        "batches formed at step boundaries: one forward over every decoding sequence (caches padded and"
        " stacked), a forward per prompt chunk"
    )

    def __init__(self, model: Any, tokenizer: Any, *, max_seqs: int, seq_ctx: int, max_tokens: int, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_seqs, self.seq_ctx, self.max_tokens = max_seqs, seq_ctx, max_tokens
        self.n_vocab = int(model.config.vocab_size)
        self.device = next(model.parameters()).device
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        self.eog_ids = tuple(sorted(ids))
        self.bos = tokenizer.bos_token_id
        self._special = set(tokenizer.all_special_ids)
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._bytes = _byte_decoder() if "ByteLevel" in type(decoder).__name__ or "ByteLevel" in repr(decoder) else None
        self._caches: dict[int, Any] = {}
        # transformers renamed the cache argument (past_key_values → cache, 5.24); take the one it has
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # -- text ----------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def piece(self, token: int) -> bytes:
        if token in self._special:
            return b""
        text = self.tokenizer.convert_ids_to_tokens(token)
        if self._bytes is not None:
            return bytes(self._bytes[c] for c in text if c in self._bytes)
        if text.startswith("<0x") and text.endswith(">") and len(text) == 6:  # SentencePiece byte fallback
            return bytes([int(text[3:5], 16)])
        return text.replace("▁", " ").encode()

    def check_ids(self, ids: list[int]) -> None:
        if ids and (min(ids) < 0 or max(ids) >= self.n_vocab):
            raise InvalidInputError(f"token id {max(ids)} is outside the model's vocabulary of {self.n_vocab}")

    # -- one step ------------------------------------------------------------------------------

    def decode(self, items: list[BatchItem]) -> dict[int, Any]:
        import torch

        out: dict[int, Any] = {}
        with torch.inference_mode():
            singles = [i for i in items if len(i.tokens) == 1 and i.slot in self._caches]
            if singles:
                out.update(self._decode_batch(singles))
            for item in items:
                if item not in singles:
                    row = self._forward_one(item)
                    if item.logits:
                        out[item.slot] = row
        return out

    def _forward_one(self, item: BatchItem) -> Any:
        import torch
        from transformers import DynamicCache

        cache = self._caches.setdefault(item.slot, DynamicCache())
        n = len(item.tokens)
        positions = torch.arange(item.start_pos, item.start_pos + n, device=self.device)
        result = self.model(
            input_ids=torch.tensor([item.tokens], device=self.device),
            **{self._cache_arg: cache},
            position_ids=positions[None],
            cache_position=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        return result.logits[0, -1].float().cpu().numpy()

    def _decode_batch(self, items: list[BatchItem]) -> dict[int, Any]:
        """One forward of one new token per sequence over left-padded, stacked caches."""
        import torch
        from transformers import DynamicCache

        caches = [self._caches[i.slot] for i in items]
        lengths = [c.get_seq_length() for c in caches]
        longest = max(lengths)
        stacked = DynamicCache()
        for layer in range(len(caches[0].layers)):
            keys, values = [], []
            for c, length in zip(caches, lengths, strict=True):
                k, v = c.layers[layer].keys, c.layers[layer].values
                pad = longest - length
                keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)) if pad else k)
                values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)) if pad else v)
            stacked.update(torch.cat(keys), torch.cat(values), layer)
        mask = torch.zeros(len(items), longest + 1, dtype=torch.long, device=self.device)
        for row, length in enumerate(lengths):
            mask[row, longest - length :] = 1
        result = self.model(
            input_ids=torch.tensor([[i.tokens[0]] for i in items], device=self.device),
            attention_mask=mask,
            **{self._cache_arg: stacked},
            position_ids=torch.tensor([[i.start_pos] for i in items], device=self.device),
            cache_position=torch.tensor([longest], device=self.device),
            use_cache=True,
        )
        logits = result.logits[:, -1].float().cpu().numpy()
        for row, (item, length) in enumerate(zip(items, lengths, strict=True)):
            own = DynamicCache()
            for layer, data in enumerate(stacked.layers):
                start = longest - length
                own.update(
                    data.keys[row : row + 1, :, start:].clone(), data.values[row : row + 1, :, start:].clone(), layer
                )
            self._caches[item.slot] = own
        return {item.slot: logits[row] for row, item in enumerate(items)}

    def release(self, slot: int) -> None:
        self._caches.pop(slot, None)

    def close(self) -> None:
        self._caches.clear()
