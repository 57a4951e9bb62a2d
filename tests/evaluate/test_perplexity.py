import math

import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer  # noqa: E402
from wattlm.errors import InvalidInputError  # noqa: E402
from wattlm.evaluate.perplexity import Protocol, make_windows  # noqa: E402
from wattlm.evaluate.quality import QualitySums, ppl_from_nll, score  # noqa: E402


def test_windows_are_non_overlapping_and_drop_the_tail():
    w = make_windows(list(range(1000)), Protocol(seq_len=64, max_tokens=300))
    assert w.shape == (4, 64)
    assert w[1, 0].item() == 64 and w[3, -1].item() == 255


def test_too_short_text_and_too_long_window_are_clear_errors():
    with pytest.raises(InvalidInputError, match="fewer than one window"):
        make_windows(list(range(10)), Protocol(seq_len=64, max_tokens=128))
    with pytest.raises(InvalidInputError, match="larger than the model's context"):
        make_windows(list(range(1000)), Protocol(seq_len=256, max_tokens=512), context_len=128)
    with pytest.raises(InvalidInputError):
        Protocol(seq_len=512, max_tokens=100)


def test_uniform_model_has_perplexity_equal_to_vocab():
    model = tiny_llama(vocab=96)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: a uniform distribution over 96 tokens
    windows = make_windows(torch.randint(0, 96, (512,)), Protocol(seq_len=32, max_tokens=512))
    result = score(model, windows, batch_size=4).result()
    assert result.ppl == pytest.approx(96.0, rel=1e-6)
    assert result.predicted_tokens == 16 * 31 and result.windows == 16


def test_matches_transformers_own_loss_and_batching_does_not_change_it():
    model = tiny_llama(seed=3)
    ids = tiny_tokenizer()("To be, or not to be, that is the question: " * 20).input_ids
    windows = make_windows(ids, Protocol(seq_len=48, max_tokens=480))
    with torch.inference_mode():
        losses = [model(w[None], labels=w[None]).loss.item() for w in windows]
    expected = sum(losses) / len(losses)  # equal-length windows: the mean of per-window means
    one, four = score(model, windows).result(), score(model, windows, batch_size=4).result()
    assert one.nll == pytest.approx(expected, rel=1e-5)
    assert four.nll == pytest.approx(one.nll, rel=1e-5)
    assert one.ppl == pytest.approx(math.exp(one.nll))


def test_a_huge_nll_gives_an_infinite_perplexity_instead_of_an_overflow():
    assert ppl_from_nll(800.0) == math.inf and math.isnan(ppl_from_nll(math.nan))
    assert ppl_from_nll(2.0) == pytest.approx(math.exp(2.0))
    broken = QualitySums(nll_sum=1e6, predicted=10, windows=1).result()
    assert broken.ppl == math.inf and not broken.finite
    assert QualitySums(nll_sum=20.0, predicted=10, windows=1).result().finite


def test_a_model_with_nan_weights_scores_nan_not_an_error():
    model = tiny_llama(seed=4)
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    windows = make_windows(torch.randint(0, 96, (128,)), Protocol(seq_len=32, max_tokens=128))
    result = score(model, windows, batch_size=2).result()
    assert math.isnan(result.nll) and not result.finite
