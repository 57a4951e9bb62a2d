import json
import time

import pytest
import torch
from safetensors.torch import load_file  # noqa: E402

from tests.fakes.sources import ScriptedSource  # noqa: E402
from tests.tiny import save_inputs, tiny_llama, tiny_tokenizer  # noqa: E402
from wattlm.errors import InvalidInputError  # noqa: E402
from wattlm.train import TrainConfig, run_train  # noqa: E402

TEXT = "\n\n".join(
    f"Paragraph {i} says hello to the world of number {i * 7 % 13} and more words here." for i in range(300)
)
POWER_W = 100.0


class ClockCounter(ScriptedSource):
    """A counter that reads 100 W × elapsed time, so every window's energy is 100 × its duration."""

    def __init__(self):
        super().__init__(key="fake:gpu0", domain="gpu", provenance="counter")
        self._t0 = time.monotonic()

    def read(self):
        self.energy_j = POWER_W * (time.monotonic() - self._t0)
        return super().read()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return save_inputs(tmp_path_factory.mktemp("train"), TEXT)


def config(inputs, **kw):
    base = dict(
        model=str(inputs / "model"),
        text=str(inputs / "text.txt"),
        steps=4,
        batch_size=2,
        seq_len=64,
        eval_windows=2,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def records(run):
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def weights(run):
    return load_file(str(run / "model" / "model.safetensors"))


def test_steps_epochs_and_summary_are_metered(inputs, tmp_path):
    text = tmp_path / "short.txt"
    text.write_text(TEXT[:500])  # a few rows: several epochs in 5 steps
    summary = run_train(
        config(inputs, text=str(text), steps=5, eval_windows=1), out=tmp_path / "run", sources=(ClockCounter(),)
    )
    recs = records(tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    per_epoch = info["data"]["steps_per_epoch"]
    assert per_epoch < 5
    steps = [r for r in recs if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]
    for r in steps:
        assert r["provenance"] == "counter" and r["tokens"] == 2 * 64
        assert r["energy_j"] == pytest.approx(POWER_W * r["duration_s"], rel=0.05, abs=0.05)
        assert r["j_per_token"] == pytest.approx(r["energy_j"] / r["tokens"])
        assert 0 < r["label_tokens"] < r["tokens"]  # document starts carry no label
    epochs = [r for r in recs if r["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(len(epochs)))
    for e in epochs:
        mine = [r for r in steps if r["epoch"] == e["epoch"]]
        assert e["energy_j"] == pytest.approx(sum(r["energy_j"] for r in mine))
        assert e["complete"] == (len(mine) == per_epoch)
    assert summary["energy_j"] == pytest.approx(sum(r["energy_j"] for r in steps))
    assert summary["run_it_energy_j"] >= summary["energy_j"]  # the whole run also holds the checkpoint writes
    assert summary["eval_before"]["ppl"] > 0 and summary["eval_after"]["ppl"] > 0
    assert recs[-1]["kind"] == "summary" and recs[0]["kind"] == "eval"


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(inputs, tmp_path):
    run_train(config(inputs, steps=6), out=tmp_path / "full")
    run_train(config(inputs, steps=3), out=tmp_path / "part")
    run_train(config(inputs, steps=6), resume=tmp_path / "part")
    full, part = weights(tmp_path / "full"), weights(tmp_path / "part")
    assert full.keys() == part.keys()
    for name in full:
        assert torch.equal(full[name], part[name]), name
    loss = lambda run: [r["loss"] for r in records(run) if r["kind"] == "step"]  # noqa: E731
    assert loss(tmp_path / "part") == loss(tmp_path / "full")
    assert len(list((tmp_path / "part" / "checkpoints").glob("step-*"))) == 1  # older ones are removed
    # and the stopped run is not yet the same: the check can fail
    with pytest.raises(InvalidInputError, match="other options"):
        run_train(config(inputs, steps=8, lr=1e-3), resume=tmp_path / "part")
    with pytest.raises(InvalidInputError, match="already has 6 steps"):
        run_train(config(inputs, steps=6), resume=tmp_path / "part")


def test_bf16_autocast_trains_on_cpu_close_to_fp32(inputs, tmp_path):
    a = run_train(config(inputs, steps=2), out=tmp_path / "fp32")
    b = run_train(config(inputs, steps=2, precision="bf16"), out=tmp_path / "bf16")
    assert b["first_loss"] == pytest.approx(a["first_loss"], rel=0.02)
    assert b["first_loss"] != a["first_loss"]  # bf16 matmuls did run
    assert torch.isfinite(torch.tensor(b["last_loss"]))


def test_pruned_weights_stay_zero_unless_told_otherwise(inputs, tmp_path):
    from wattlm.compress import PruneConfig, compress_
    from wattlm.compress.store import load, save

    model = tiny_llama(seed=0)
    compress_(model, PruneConfig(method="magnitude", sparsity=0.5))
    save(model, tmp_path / "pruned", tiny_tokenizer())
    zeros = model.model.layers[0].mlp.up_proj.weight == 0
    run_train(config(inputs, model=str(tmp_path / "pruned"), steps=3, lr=1e-3), out=tmp_path / "held")
    trained, _ = load(tmp_path / "held" / "model")
    w = trained.model.layers[0].mlp.up_proj.weight
    assert torch.equal(w == 0, zeros)
    assert not torch.equal(w, model.model.layers[0].mlp.up_proj.weight)  # the rest did train
    run_train(
        config(inputs, model=str(tmp_path / "pruned"), steps=3, lr=1e-3, keep_sparsity=False), out=tmp_path / "free"
    )
    free, _ = load(tmp_path / "free" / "model")
    assert int((free.model.layers[0].mlp.up_proj.weight == 0).sum()) < int(zeros.sum()) // 2


def test_qat_saves_a_quantized_model_that_computes_what_training_saw(inputs, tmp_path):
    from wattlm.compress.qlinear import Int8Linear
    from wattlm.compress.store import load

    s = run_train(config(inputs, steps=3, qat="int8", lr=1e-3), out=tmp_path / "qat")
    assert s["qat"] == {
        "scheme": "int8",
        "layers": 2 * 7 + 1,
        "convert": "int8",
    }  # q k v o gate up down per layer + lm_head
    assert s["eval_after_convert"]["ppl"] == pytest.approx(s["eval_after"]["ppl"], rel=1e-4)
    model, _ = load(tmp_path / "qat" / "model")
    assert isinstance(model.model.layers[1].self_attn.q_proj, Int8Linear)


def test_distilling_a_half_depth_student_with_cached_teacher_logits(inputs, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    t = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=96,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
        )
    )
    t.save_pretrained(tmp_path / "teacher")
    tiny_tokenizer().save_pretrained(tmp_path / "teacher")
    short = tmp_path / "short.txt"
    short.write_text(TEXT[:500])
    s = run_train(
        TrainConfig(
            teacher=str(tmp_path / "teacher"),
            student="half-depth",
            text=str(short),
            steps=6,
            batch_size=2,
            seq_len=64,
            eval_windows=1,
            teacher_cache=True,
            device="cpu",
        ),
        out=tmp_path / "kd",
    )
    steps = [r for r in records(tmp_path / "kd") if r["kind"] == "step"]
    assert all("kl" in r and "ce" in r for r in steps)
    assert s["teacher_cache"]["hits"] > 0  # later epochs read the cached logits
    assert s["eval_before"]["teacher_ppl"] > 0
    saved = json.loads((tmp_path / "kd" / "model" / "config.json").read_text())
    assert saved["num_hidden_layers"] == 2


def test_bad_inputs_fail_before_anything_is_written(inputs, tmp_path):
    with pytest.raises(InvalidInputError, match="fp16 trains with a gradient scaler on CUDA"):
        run_train(config(inputs, precision="fp16"), out=tmp_path / "x")
    with pytest.raises(InvalidInputError, match="precision 'fp8' is not one of"):
        config(inputs, precision="fp8")
    with pytest.raises(InvalidInputError, match="student builds a student from teacher"):
        config(inputs, student="half-depth")
    with pytest.raises(InvalidInputError, match="fewer than one step"):
        tiny = tmp_path / "tiny.txt"
        tiny.write_text("just a few words\n\nand some more")
        run_train(config(inputs, text=str(tiny), eval_windows=0), out=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_zeros_are_held_only_for_a_pruned_model_unless_asked():
    from wattlm.compress import PruneConfig, compress_
    from wattlm.finetune import sparse_masks

    dense = tiny_llama(seed=5)
    with torch.no_grad():
        dense.model.layers[0].mlp.up_proj.weight[:, :10] = 0  # zeros from a quantization grid, say
    assert sparse_masks(dense, None) == {}  # no pruning in its history: nothing held
    assert list(sparse_masks(dense, True)) == ["model.layers.0.mlp.up_proj.weight"]
    compress_(dense, PruneConfig(method="magnitude", sparsity=0.5))
    assert len(sparse_masks(dense, None)) == 14 and sparse_masks(dense, False) == {}


def test_a_pruned_teacher_copy_is_a_student_too(inputs, tmp_path):
    from wattlm.compress import StructuredConfig, compress_
    from wattlm.compress.store import save

    student = tiny_llama(seed=0)
    ids = torch.randint(1, 96, (4, 32), generator=torch.Generator().manual_seed(0))
    compress_(student, StructuredConfig(fraction=0.25), calibration=ids)  # narrower MLPs and fewer heads
    save(student, tmp_path / "narrow", tiny_tokenizer())
    s = run_train(
        TrainConfig(
            teacher=str(inputs / "model"),
            model=str(tmp_path / "narrow"),
            text=str(inputs / "text.txt"),
            steps=2,
            batch_size=2,
            seq_len=64,
            eval_windows=1,
            device="cpu",
        ),
        out=tmp_path / "kd",
    )
    assert s["steps"] == 2 and s["eval_before"]["teacher_ppl"] != s["eval_before"]["ppl"]
    steps = [r for r in records(tmp_path / "kd") if r["kind"] == "step"]
    assert all(r["kl"] > 0 for r in steps)
