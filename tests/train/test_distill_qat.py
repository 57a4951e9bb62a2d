import math

import pytest
import torch

from tests.tiny import tiny_llama, tiny_tokenizer  # noqa: E402
from wattlm.compress.qlinear import Int4Linear, Int8Linear  # noqa: E402
from wattlm.errors import InvalidInputError  # noqa: E402
from wattlm.train.data import IGNORE  # noqa: E402
from wattlm.train.distill import TeacherCache, check_vocab, kd_loss, make_student, student_layers  # noqa: E402
from wattlm.train.qat import convert_, enable_qat_, fake_quantize, qat_config  # noqa: E402


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def test_kd_loss_equals_its_formula_by_hand():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(1, 4, 5, generator=g)
    t = torch.randn(1, 4, 5, generator=g)
    labels = torch.tensor([[7, 2, IGNORE, 4]])  # label[0] is never predicted; position 2 carries none
    alpha, temp = 0.3, 2.5
    loss, parts = kd_loss(s, t, labels, alpha=alpha, temperature=temp)
    kls, ces = [], []
    for pos, target in ((0, 2), (2, 4)):  # logits at pos predict label[pos + 1]
        ps = _softmax([x / temp for x in s[0, pos].tolist()])
        pt = _softmax([x / temp for x in t[0, pos].tolist()])
        kls.append(sum(a * math.log(a / b) for a, b in zip(pt, ps)))
        ces.append(-math.log(_softmax(s[0, pos].tolist())[target]))
    kl, ce = sum(kls) / 2, sum(ces) / 2
    assert parts["kl"] == pytest.approx(kl, rel=1e-5)
    assert parts["ce"] == pytest.approx(ce, rel=1e-5)
    assert float(loss) == pytest.approx(alpha * temp**2 * kl + (1 - alpha) * ce, rel=1e-5)
    # α = 0 is plain next-token cross-entropy, as the model computes it.
    loss0, _ = kd_loss(s, t, labels, alpha=0.0, temperature=temp)
    ref = torch.nn.functional.cross_entropy(s[0, :-1], torch.tensor([2, IGNORE, 4]), ignore_index=IGNORE)
    assert float(loss0) == pytest.approx(float(ref), rel=1e-6)
    # identical logits: no KL
    assert kd_loss(s, s, labels, alpha=1.0, temperature=temp)[1]["kl"] == pytest.approx(0.0, abs=1e-6)


def test_half_depth_student_keeps_evenly_spaced_layers():
    thirty = student_layers("half-depth", 30)
    assert (
        len(thirty) == 15
        and thirty[0] == 0
        and thirty[-1] == 29
        and all(1 <= b - a <= 3 for a, b in zip(thirty, thirty[1:]))
    )
    assert student_layers("half-depth", 4) == [0, 3]
    assert student_layers("depth3", 5) == [0, 2, 4]
    assert student_layers("depth1", 5) == [0]
    with pytest.raises(InvalidInputError, match="keep between 1 and 3"):
        student_layers("depth4", 4)


def test_student_is_built_from_the_teacher_and_generates():
    teacher = tiny_llama(layers=4)
    student = make_student(teacher, "half-depth")
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    torch.testing.assert_close(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    assert student.model.layers[1].self_attn.layer_idx == 1
    ids = torch.randint(1, 96, (1, 5))
    with torch.no_grad():
        out = student.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, 9)


def test_vocabulary_mismatch_is_refused():
    t, s = tiny_llama(vocab=96), tiny_llama(vocab=80)
    with pytest.raises(InvalidInputError, match="tokenizers differ"):
        check_vocab(tiny_tokenizer(96), tiny_tokenizer(80), t, s)
    with pytest.raises(InvalidInputError, match="predicts 96 tokens and the student 80"):
        check_vocab(tiny_tokenizer(96), tiny_tokenizer(96), t, s)
    check_vocab(tiny_tokenizer(96), tiny_tokenizer(96), t, tiny_llama(vocab=96))


def test_teacher_cache_round_trip(tmp_path):
    cache = TeacherCache(tmp_path / "c")
    logits = torch.randn(2, 3, 5)
    assert cache.get([4, 9]) is None
    cache.put([4, 9], logits)
    got = cache.get([9, 4])
    torch.testing.assert_close(got, logits.bfloat16()[[1, 0]])
    assert (cache.hits, cache.misses) == (1, 1)
    assert not list((tmp_path / "c").glob("*.tmp"))


@pytest.mark.parametrize("name,cls", [("int8", Int8Linear), ("int4-g16", Int4Linear)])
def test_fake_quantization_is_what_conversion_computes(name, cls):
    model = tiny_llama(seed=3)
    ids = torch.randint(1, 96, (2, 12))
    enable_qat_(model, name)
    with torch.no_grad():
        fake = model(ids).logits
    w = model.model.layers[0].mlp.up_proj.weight  # the fake-quantized value
    config = qat_config(name)
    torch.testing.assert_close(
        w, fake_quantize(model.model.layers[0].mlp.up_proj.parametrizations.weight.original.detach(), config)
    )
    convert_(model, name)
    assert isinstance(model.model.layers[0].mlp.up_proj, cls)
    with torch.no_grad():
        real = model(ids).logits
    torch.testing.assert_close(real, fake, rtol=1e-4, atol=1e-4)


def test_straight_through_gradient_and_training_moves_the_fp32_weights():
    model = tiny_llama(seed=4)
    enable_qat_(model, "int8")
    layer = model.model.layers[0].mlp.down_proj
    original = layer.parametrizations.weight.original
    x = torch.randn(3, layer.in_features)
    (layer(x) ** 2).sum().backward()
    # d(x·q(w)ᵀ)/dw with q' = 1: the gradient of a plain linear layer at the quantized weights.
    wq = layer.weight.detach().requires_grad_(True)
    (torch.nn.functional.linear(x, wq) ** 2).sum().backward()
    torch.testing.assert_close(original.grad, wq.grad)
    # A step moves the fp32 master weights — by less than a grid step, which the quantized
    # forward does not see at once: the fp32 copy is what carries small updates.
    before = original.detach().clone()
    torch.optim.SGD([original], lr=1e-4).step()
    assert not torch.equal(original.detach(), before)
    torch.testing.assert_close(original.detach() - before, -1e-4 * original.grad)


def test_int4_group_that_does_not_divide_is_refused():
    with pytest.raises(InvalidInputError, match="group size 64 does not divide the 32 inputs"):
        enable_qat_(tiny_llama(), "int4-g64")
