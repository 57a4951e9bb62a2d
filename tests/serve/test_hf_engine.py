"""The transformers serving engine: batched decode over padded, stacked caches gives the logits a
plain forward of each whole sequence gives, and the server runs on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny import tiny_bpe_tokenizer, tiny_llama
from wattlm.engines.batch import BatchItem
from wattlm.engines.hf_batch import HFBatch


@pytest.fixture(scope="module")
def engine():
    tokenizer = tiny_bpe_tokenizer()
    model = tiny_llama(vocab=len(tokenizer), layers=2)
    return HFBatch(model, tokenizer, max_seqs=4, seq_ctx=64, max_tokens=64, threads=1)


def full_logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float().numpy()


def test_batched_decode_matches_whole_sequences(engine):
    rng = np.random.default_rng(0)
    prompts = [list(map(int, rng.integers(0, engine.n_vocab, n))) for n in (3, 9, 5)]
    seqs = {}
    for slot, prompt in enumerate(prompts):  # prompts in chunks of 4, as chunked prefill feeds them
        for start in range(0, len(prompt), 4):
            chunk = tuple(prompt[start : start + 4])
            rows = engine.decode([BatchItem(slot, chunk, start, start + 4 >= len(prompt))])
        seqs[slot] = prompt + [int(np.argmax(rows[slot]))]
        assert np.allclose(rows[slot], full_logits(engine.model, prompt), atol=1e-4)
    for _ in range(4):  # every sequence one token per step, in one forward
        items = [BatchItem(s, (ids[-1],), len(ids) - 1, True) for s, ids in seqs.items()]
        rows = engine.decode(items)
        for s, ids in seqs.items():
            assert np.allclose(rows[s], full_logits(engine.model, ids), atol=1e-4)
            ids.append(int(np.argmax(rows[s])))
    engine.release(1)
    rows = engine.decode([BatchItem(1, tuple(prompts[0]), 0, True)])  # a freed slot starts clean
    assert np.allclose(rows[1], full_logits(engine.model, prompts[0]), atol=1e-4)


def test_pieces_are_the_tokens_bytes(engine):
    text = "To be, or not to be"
    ids = engine.tokenize(text)
    assert b"".join(engine.piece(t) for t in ids).decode() == text
    assert engine.piece(engine.tokenizer.eos_token_id) == b""


@pytest.mark.slow
def test_wattlm_serve_on_transformers(tmp_path):
    import json
    import signal

    from tests.serve.helpers import CHAT
    from tests.serve.test_server import post, running
    from wattlm.httpget import get
    from wattlm.jsonlog import read_ledger

    tokenizer = tiny_bpe_tokenizer()
    tokenizer.chat_template = CHAT
    folder = tmp_path / "model"
    tiny_llama(vocab=len(tokenizer), layers=2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with running(folder, tmp_path, "--variant", "bf16") as (url, proc, ledger, _):
        health = json.loads(get(url + "/health", 5)[1])
        assert health["engine"] == "hf" and health["batching"].startswith("batches formed at step boundaries")
        assert health["source"]["variant"] == "bf16"
        status, _, answer = post(url + "/v1/completions", {"prompt": "To be", "max_tokens": 6, "ignore_eos": True})
        assert status == 200 and answer["usage"]["completion_tokens"] == 6 and answer["usage"]["energy"]["total_j"] > 0
        chat = {"messages": [{"role": "user", "content": "whether 'tis nobler"}], "max_tokens": 4, "ignore_eos": True}
        status, _, answer = post(url + "/v1/chat/completions", chat)
        assert status == 200 and answer["choices"][0]["message"]["role"] == "assistant"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert [x["status"] for x in read_ledger(ledger)] == ["completed", "completed"]
