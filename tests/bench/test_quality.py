import math

import pytest
import torch

from tests.tiny import tiny_llama  # noqa: E402
from wattlm.bench.distributed import Dist, shard  # noqa: E402
from wattlm.evaluate.quality import QualitySums, Reference, score  # noqa: E402


def _windows(n=6, length=24, seed=0):
    return torch.randint(1, 96, (n, length), generator=torch.Generator().manual_seed(seed))


def ref_again(model, windows):
    ref = Reference()
    score(model, windows, reference=ref, write_reference=True, kl_windows=4)
    return ref


def test_kl_to_itself_is_zero_and_to_another_model_matches_torch():
    windows = _windows()
    base, other = tiny_llama(seed=0), tiny_llama(seed=1)
    ref = Reference()
    try:
        b = score(base, windows, reference=ref, write_reference=True, kl_windows=4).result()
        same = score(base, windows, reference=ref, kl_windows=4).result()
        diff = score(other, windows, reference=ref, kl_windows=4).result()
    finally:
        ref.close()
    with torch.inference_mode():
        own_loss = sum(base(w[None], labels=w[None]).loss.item() for w in windows) / len(windows)
    assert b.nll == pytest.approx(own_loss, rel=1e-5)
    batched = score(other, windows, batch_size=4, reference=ref_again(base, windows), kl_windows=4).result()
    assert batched.kl == pytest.approx(diff.kl, rel=1e-9) and batched.nll == pytest.approx(diff.nll, rel=1e-9)
    assert same.kl == pytest.approx(0.0, abs=1e-9) and same.top1_agreement == 1.0
    assert (same.kl_tokens, same.kl_windows) == (4 * 23, 4)
    with torch.no_grad():
        p = torch.log_softmax(base(windows[:4]).logits[:, :-1].double(), -1)
        q = torch.log_softmax(other(windows[:4]).logits[:, :-1].double(), -1)
    expected = torch.nn.functional.kl_div(q, p, log_target=True, reduction="sum").item() / (4 * 23)
    assert diff.kl == pytest.approx(expected, rel=1e-5)
    assert diff.kl > 0 and 0 <= diff.top1_agreement < 1


def test_shards_add_up_to_the_whole():
    windows = _windows(n=5)
    model, other = tiny_llama(seed=2), tiny_llama(seed=3)
    whole_ref = Reference()
    score(model, windows, reference=whole_ref, write_reference=True, kl_windows=3)
    whole = score(other, windows, reference=whole_ref, kl_windows=3)
    whole_ref.close()
    total = QualitySums()
    for rank in range(2):
        local, indices = shard(windows, Dist(rank, 2, rank))
        ref = Reference()
        score(model, local, reference=ref, write_reference=True, kl_windows=3, indices=indices)
        total = total + score(other, local, reference=ref, kl_windows=3, indices=indices)
        ref.close()
    assert total.predicted == whole.predicted and total.kl_predicted == whole.kl_predicted == 3 * 23
    assert math.isclose(total.nll_sum, whole.nll_sum, rel_tol=1e-9)
    assert math.isclose(total.kl_sum, whole.kl_sum, rel_tol=1e-9)
