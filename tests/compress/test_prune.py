"""Pruning: masks and scores on hand-made layers, each method on a tiny seeded model, N:M patterns,
SparseGPT's weight update, Taylor/Fisher scores against autograd, and the recovery hook."""

import copy

import pytest
import torch

from tests.compress.test_calibrated import correlated_inputs  # noqa: E402
from tests.tiny import tiny_llama  # noqa: E402
from wattlm.compress import PruneConfig, compress_, config_from_name  # noqa: E402
from wattlm.compress.prune import ColumnNorms, drop_lowest, gradient_moments, keep_mask, wanda_scores  # noqa: E402
from wattlm.compress.recover import recover_  # noqa: E402
from wattlm.compress.registry import targets  # noqa: E402
from wattlm.compress.sparsegpt import sparsegpt_prune  # noqa: E402
from wattlm.errors import InvalidInputError  # noqa: E402

CALIB = torch.randint(0, 96, (8, 32), generator=torch.Generator().manual_seed(0))
METHODS = ("magnitude", "taylor", "fisher", "wanda", "sparsegpt")


def pruned(name, model=None):
    model = model or tiny_llama(seed=1)
    config = config_from_name(name)
    with torch.no_grad():
        record = compress_(model, config, calibration=CALIB if config.calibrated else None)
    return model, record


def test_drop_lowest_takes_exactly_k_with_ties_in_order():
    scores = torch.tensor([3.0, 1.0, 1.0, 1.0, 0.5, 2.0])
    assert drop_lowest(scores, 3).tolist() == [False, True, True, False, True, False]
    assert int(drop_lowest(torch.zeros(10), 4).sum()) == 4
    assert not drop_lowest(scores, 0).any() and drop_lowest(scores, 6).all()


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.73])
def test_masks_have_exact_sparsity_per_layer_and_per_row(sparsity):
    scores = torch.rand(16, 40, generator=torch.Generator().manual_seed(2))
    layer = keep_mask(scores, PruneConfig(sparsity=sparsity))
    assert int((~layer).sum()) == round(sparsity * scores.numel())
    # the dropped are the lowest: every dropped score ≤ every kept one
    assert scores[~layer].max() <= scores[layer].min()
    row = keep_mask(scores, PruneConfig(sparsity=sparsity, scope="row"))
    assert ((~row).sum(dim=1) == round(sparsity * 40)).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.25, 0.5])
def test_each_method_prunes_every_target_to_the_exact_sparsity_and_spares_lm_head(method, sparsity):
    model, record = pruned(f"{method}{int(sparsity * 100)}")
    for name, linear in targets(model, ()).items():
        zeros = int((linear.weight == 0).sum())
        if name == "lm_head":
            assert zeros == 0
        else:
            assert zeros == round(sparsity * linear.weight.numel()), name
    assert record["details"]["sparsity"] == pytest.approx(sparsity) and record["kernel"]["fast"] is False


def test_global_scope_has_the_exact_count_across_layers_but_not_per_layer():
    model, record = pruned("magnitude50-global")
    chosen = {n: lin for n, lin in targets(model, ()).items() if n != "lm_head"}
    total = sum(lin.weight.numel() for lin in chosen.values())
    assert sum(int((lin.weight == 0).sum()) for lin in chosen.values()) == round(0.5 * total)
    assert record["details"]["min_layer_sparsity"] < 0.5 < record["details"]["max_layer_sparsity"]


@pytest.mark.parametrize("method", METHODS + ("l2shrink",))
@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4)])
def test_n_m_patterns_keep_at_most_n_in_every_m_consecutive_inputs(method, n, m):
    model, _ = pruned(f"{method}-{n}:{m}")
    for name, linear in targets(model, ("lm_head",)).items():
        groups = linear.weight.reshape(linear.out_features, -1, m)
        nonzero = (groups != 0).sum(dim=2)
        if method == "l2shrink":  # shrinks instead of zeroing: every weight stays
            assert (nonzero == m).all()
        else:
            assert (nonzero == n).all(), name


def test_wanda_score_is_weight_magnitude_times_input_norm_on_a_hand_made_layer():
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5], [-4.0, 1.0, 0.1, 2.0]])
    x1 = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 1.0]])
    x2 = torch.tensor([[2.0, 0.0, 0.0, 1.0]])
    norms = ColumnNorms()
    norms("l", x1)
    norms("l", x2)
    n = norms.norms("l")
    assert torch.allclose(n, torch.tensor([5.0**0.5, 3.0, 2.0, 2.0**0.5]))
    scores = wanda_scores(w, n)
    assert torch.allclose(scores, torch.tensor([[5**0.5, 6.0, 6.0, 0.5 * 2**0.5], [4 * 5**0.5, 3.0, 0.2, 2 * 2**0.5]]))
    # per row (Wanda's comparison group), half of each row goes: row 0 loses inputs 3 and 0, row 1 loses 2 and 3
    keep = keep_mask(scores, PruneConfig(method="wanda", sparsity=0.5))
    assert keep.tolist() == [[False, True, True, False], [True, True, False, False]]


def test_sparsegpt_output_error_is_below_magnitude_pruning_on_correlated_inputs():
    x = correlated_inputs()
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    h = (x.t() @ x).double() / x.shape[0]
    for config in (PruneConfig(method="sparsegpt", sparsity=0.5), PruneConfig(method="sparsegpt", n=2, m=4)):
        sparse = sparsegpt_prune(w, h, config)
        magnitude = w * keep_mask(w.abs(), PruneConfig(sparsity=0.5) if not config.m else PruneConfig(n=2, m=4))
        assert int((sparse == 0).sum()) == int((magnitude == 0).sum()) == 32 * 32
        err_sparse = float(((x @ (w - sparse).t()) ** 2).mean())
        err_magnitude = float(((x @ (w - magnitude).t()) ** 2).mean())
        assert err_sparse < 0.5 * err_magnitude


def with_outlier_channels(model, factor=20.0, channels=(3, 11, 17)):
    """The same function with a few input channels of every layer `factor`× larger and their weights
    `factor`× smaller (norm weight up, next weights down), like the outlier features of real LLMs."""
    with torch.no_grad():
        for layer in model.model.layers:
            for norm, linears in (
                (layer.input_layernorm, ("q_proj", "k_proj", "v_proj")),
                (layer.post_attention_layernorm, ("gate_proj", "up_proj")),
            ):
                norm.weight[list(channels)] *= factor
                for name in linears:
                    owner = layer.self_attn if name.endswith(("q_proj", "k_proj", "v_proj")) else layer.mlp
                    getattr(owner, name).weight[:, list(channels)] /= factor
    return model


def test_sparsegpt_and_wanda_beat_magnitude_on_a_model_with_outlier_features():
    base = with_outlier_channels(tiny_llama(seed=4))
    with torch.no_grad():
        reference = base(input_ids=CALIB).logits.log_softmax(-1)

    def kl(name):
        model, _ = pruned(name, copy.deepcopy(base))
        with torch.no_grad():
            logp = model(input_ids=CALIB).logits.log_softmax(-1)
        return float((reference.exp() * (reference - logp)).sum(-1).mean())

    magnitude = kl("magnitude50")
    assert kl("sparsegpt50") < magnitude and kl("wanda50") < magnitude


def test_taylor_and_fisher_scores_equal_autograd_on_a_tiny_model():
    model = tiny_llama(seed=5)
    params = {"up": model.model.layers[0].mlp.up_proj.weight, "q": model.model.layers[1].self_attn.q_proj.weight}
    grad, fisher = gradient_moments(model, CALIB, params, batch_size=3)  # 3, 3, 2 sequences: unequal batches
    loss = model(input_ids=CALIB, labels=CALIB).loss
    want = torch.autograd.grad(loss, list(params.values()))
    for (name, _), g in zip(params.items(), want):
        assert torch.allclose(grad[name], g, atol=1e-6, rtol=1e-4)
    per_batch = []
    for ids in (CALIB[:3], CALIB[3:6], CALIB[6:]):
        g = torch.autograd.grad(model(input_ids=ids, labels=ids).loss, [params["up"]])[0]
        per_batch.append(ids.shape[0] / 8 * g.square())
    assert torch.allclose(fisher["up"], sum(per_batch), atol=1e-9, rtol=1e-4)
    assert all(p.requires_grad for p in model.parameters())  # the flags it changed are restored


def test_taylor_pruning_drops_the_lowest_weight_times_gradient():
    base = tiny_llama(seed=6)
    up = "model.layers.0.mlp.up_proj"
    w = base.get_submodule(up).weight.detach().clone()
    grad, _ = gradient_moments(base, CALIB, {up: base.get_submodule(up).weight})
    scores = (w * grad[up]).abs()
    model, _ = pruned("taylor50", base)
    kept = model.get_submodule(up).weight != 0
    assert scores[~kept].max() <= scores[kept].min()


def test_l2shrink_scales_the_unimportant_weights_by_their_magnitude_over_the_threshold():
    model = tiny_llama(seed=7)
    before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    pruned("l2shrink50", model)
    after = model.model.layers[0].mlp.down_proj.weight.detach()
    keep = keep_mask(before.abs(), PruneConfig(sparsity=0.5))
    threshold = before.abs()[keep].min()
    assert torch.equal(after[keep], before[keep])
    assert torch.allclose(after[~keep], before[~keep] * before[~keep].abs() / threshold)
    assert int((after == 0).sum()) == 0


def test_pruning_after_quantizing_is_refused_with_the_order_to_use():
    model, _ = pruned("int8")
    with pytest.raises(InvalidInputError, match="prune or share before quantizing"):
        pruned("magnitude50", model)


def test_n_m_needs_inputs_divisible_by_m():
    with pytest.raises(InvalidInputError, match="not a multiple of 64"):
        pruned("magnitude-2:64")


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: PruneConfig(sparsity=1.0), "[0, 1)"),
        (lambda: PruneConfig(sparsity=-0.1), "[0, 1)"),
        (lambda: config_from_name("wanda-4:2"), "1 ≤ N < M"),
        (lambda: config_from_name("wanda-4:4"), "1 ≤ N < M"),
        (lambda: PruneConfig(method="obs"), "unknown pruning method"),
        (lambda: PruneConfig(method="wanda", scope="global"), "layer by layer"),
        (lambda: PruneConfig(scope="block"), "scope must be one of"),
        (lambda: config_from_name("wanda150"), "[0, 1)"),
    ],
)
def test_bad_pruning_configs_say_what_to_use(make, words):
    with pytest.raises(InvalidInputError) as info:
        make()
    assert words in str(info.value)


def test_recovery_keeps_the_zeros_and_lowers_the_loss():
    model, _ = pruned("magnitude50", tiny_llama(seed=8))
    zeros = {n: p == 0 for n, p in model.named_parameters() if p.dim() == 2 and (p == 0).any()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []
    result = recover_(model, CALIB, steps=30, lr=3e-3, batch_size=8, on_step=lambda step, loss: seen.append(step))
    assert seen == list(range(30)) and result["last_loss"] < result["first_loss"]
    params = dict(model.named_parameters())
    assert all(bool((params[n][mask] == 0).all()) for n, mask in zeros.items())
    assert result["held_zeros"] == sum(int(m.sum()) for m in zeros.values())
    assert all(not torch.equal(params[n][~mask], before[n][~mask]) for n, mask in zeros.items())  # the rest was trained
    with pytest.raises(InvalidInputError, match="at least one step"):
        recover_(model, CALIB, steps=0)


def test_recovery_holds_the_zeros_of_pruning_only_as_training_does():
    """A model with zeros from a quantization grid (like the default GGUF model's embedding) and no
    pruning in its history: recovery trains those weights like any other, as wattlm train does."""
    model = tiny_llama(seed=9)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, :2] = 0  # 2 of 32 columns: ~6 % exact zeros
    zeros = model.model.embed_tokens.weight == 0
    result = recover_(model, CALIB, steps=3, lr=1e-2, batch_size=8)
    assert result["held_zeros"] == 0
    assert bool((model.model.embed_tokens.weight[zeros] != 0).any())
