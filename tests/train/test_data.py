import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer  # noqa: E402
from wattlm.errors import InvalidInputError  # noqa: E402
from wattlm.train.data import IGNORE, Dedup, batch_rows, pack, pad, prepare, split_documents  # noqa: E402


def test_documents_split_on_blank_lines_lines_or_not_at_all():
    text = "a b\nc\n\n  \n\nd e\n\n\nf"
    assert split_documents(text, "paragraphs") == ["a b\nc", "d e", "f"]
    assert split_documents(text, "lines") == ["a b", "c", "d e", "f"]
    assert split_documents(text, "whole") == [text.strip()]


def test_exact_duplicates_ignore_case_and_spacing():
    d = Dedup("exact")
    assert not d.is_duplicate("To be, or not to be")
    assert d.is_duplicate("to  BE, or not\nto be")
    assert not d.is_duplicate("to be, or not to be?")  # a different text is not an exact duplicate
    assert d.dropped == {"exact": 1, "near": 0}


def test_near_duplicates_are_found_and_different_texts_kept():
    words = [f"w{i}" for i in range(200)]
    base = " ".join(words)
    one_word_changed = " ".join(words[:100] + ["other"] + words[101:])  # Jaccard of 5-grams ≈ 0.95
    unrelated = " ".join(f"v{i}" for i in range(200))
    half = " ".join(words[:100] + [f"x{i}" for i in range(100)])  # Jaccard ≈ 0.33
    d = Dedup("near", threshold=0.8)
    assert not d.is_duplicate(base)
    assert d.is_duplicate(one_word_changed)
    assert not d.is_duplicate(unrelated)
    assert not d.is_duplicate(half)
    assert d.dropped == {"exact": 0, "near": 1}
    assert not Dedup("exact").is_duplicate(one_word_changed)


def test_minhash_estimates_jaccard():
    d = Dedup("near")
    a = [f"w{i}" for i in range(300)]
    b = a[:200] + [f"y{i}" for i in range(100)]
    shingles = lambda ws: {" ".join(ws[i : i + 5]) for i in range(len(ws) - 4)}  # noqa: E731
    true = len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))
    estimate = float((d.signature(" ".join(a)) == d.signature(" ".join(b))).mean())
    assert abs(estimate - true) < 0.15  # 64 permutations: standard error ≈ 0.06


def test_packing_restarts_positions_and_masks_document_starts():
    rows = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], seq_len=4, eos=0)
    # stream: 1 2 3 0 | 4 5 0 6 | 7 8 9 10 | (0 dropped)
    assert rows.input_ids.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 10]]
    assert rows.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 2, 3]]
    assert rows.labels.tolist() == [[1, 2, 3, 0], [4, 5, 0, IGNORE], [7, 8, 9, 10]]
    assert rows.info["dropped_tail_tokens"] == 1


def test_packing_leaks_nothing_across_documents():
    model = tiny_llama(seed=1)
    doc_a = torch.randint(1, 96, (11,)).tolist()
    doc_b = torch.randint(1, 96, (13,)).tolist()
    other_a = torch.randint(1, 96, (11,)).tolist()
    rows = pack([doc_a, doc_b], seq_len=24, eos=0)
    rows2 = pack([other_a, doc_b], seq_len=24, eos=0)
    with torch.no_grad():
        # use_cache=False as in training: with a KV cache transformers does not look for packed sequences.
        packed = model(**{k: v for k, v in rows.batch([0]).items() if k != "labels"}, use_cache=False).logits[0]
        packed2 = model(**{k: v for k, v in rows2.batch([0]).items() if k != "labels"}, use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([doc_b + [0]])).logits[0]
    b = slice(12, 24)  # doc_b starts after doc_a and its EOS
    torch.testing.assert_close(packed[b], alone[:12], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed2[b], packed[b], rtol=1e-5, atol=1e-5)
    # Without the restarting positions the second document would see the first: the check can fail.
    with torch.no_grad():
        leaky = model(input_ids=rows.input_ids[:1]).logits[0]
    assert not torch.allclose(leaky[b], alone[:12], atol=1e-3)


def test_padding_one_document_per_row():
    rows = pad([[1, 2, 3, 4, 5], [6], [7, 8]], seq_len=4, pad_id=0)
    # [6] alone has nothing to predict, and neither has the piece [5]: both are dropped.
    assert rows.input_ids.tolist() == [[1, 2, 3, 4], [7, 8, 0, 0]]
    assert (rows.labels[rows.attention_mask == 0] == IGNORE).all()
    assert rows.info["packed"] is False


def test_batches_depend_only_on_the_step_and_ranks_are_disjoint():
    e0, r0 = batch_rows(3, rows=20, batch=2, world=2, rank=0, seed=1)
    e1, r1 = batch_rows(3, rows=20, batch=2, world=2, rank=1, seed=1)
    assert e0 == e1 == 0 and not set(r0) & set(r1)
    assert batch_rows(3, 20, 2, 2, 0, 1) == (e0, r0)
    epoch, _ = batch_rows(5, 20, 2, 2, 0, 1)
    assert epoch == 1  # 5 steps of 4 rows per epoch
    single = batch_rows(3, 20, 4, 1, 0, 1)[1]
    assert single == r0 + r1  # two ranks see exactly the rows one process would
    with pytest.raises(InvalidInputError, match="fewer than one step"):
        batch_rows(0, rows=3, batch=2, world=2, rank=0, seed=0)


def test_prepare_holds_out_the_first_documents_and_drops_their_duplicates_from_training():
    tok = tiny_tokenizer()
    docs = (
        [f"held out text number {i}." for i in range(3)]
        + [f"training text number {i}." for i in range(40)]
        + ["held out text number 1."]
    )
    p = prepare(
        "\n\n".join(docs),
        tok,
        seq_len=16,
        eval_tokens=60,
        train_tokens=10_000,
        documents="paragraphs",
        dedup="exact",
        near_threshold=0.8,
        pack_rows=True,
    )
    assert p.eval_ids.numel() >= 60
    assert p.info["duplicates_dropped"]["exact"] == 1
    assert p.info["documents_trained"] == 40
    assert p.rows.input_ids.shape[1] == 16
