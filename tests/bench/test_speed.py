import pytest
import torch

from tests.fakes.sources import ScriptedSource  # noqa: E402
from tests.tiny import tiny_llama  # noqa: E402
from wattlm.energy.meter import EnergyMeter  # noqa: E402
from wattlm.evaluate.speed import decode_figures, greedy_generate, prefill_call, run_phase  # noqa: E402


def test_greedy_generate_matches_transformers_generate():
    model = tiny_llama(seed=3)
    prompt = torch.randint(1, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    ours = greedy_generate(model, prompt, new_tokens=9)
    theirs = model.generate(prompt, max_new_tokens=9, min_new_tokens=9, do_sample=False, pad_token_id=0)[:, 12:]
    assert ours.shape == (2, 9)
    assert torch.equal(ours, theirs)


def test_prefill_call_returns_the_next_token_of_a_full_forward():
    model = tiny_llama(seed=4)
    prompt = torch.randint(1, 96, (1, 20), generator=torch.Generator().manual_seed(1))
    assert int(prefill_call(model, prompt)()) == int(model(prompt).logits[0, -1].argmax())


class _Clock:
    """Each call of the work advances time by `step` seconds and energy by `joules`."""

    def __init__(self, source, step, joules):
        self.t, self.source, self.step, self.joules = 0.0, source, step, joules

    def __call__(self):
        return self.t

    def work(self):
        self.t += self.step
        self.source.advance(self.joules)


def test_phase_windows_last_at_least_min_s_and_report_median_and_range():
    source = ScriptedSource()
    clock = _Clock(source, step=0.25, joules=2.0)
    meter = EnergyMeter([source], clock=clock)
    phase = run_phase(meter, "p", clock.work, tokens_per_call=100, min_s=1.0, repeats=3, warmup=2, clock=clock)
    assert [r.calls for r in phase.reps] == [4, 4, 4]  # 4 × 0.25 s reaches 1 s
    assert phase.j_per_token() == {"median": 0.02, "min": 0.02, "max": 0.02}
    assert phase.tokens_per_s()["median"] == pytest.approx(400.0)
    assert phase.reps[0].measurement.work.tokens == 400
    assert phase.overhead == pytest.approx(0.0)


def test_decode_is_generation_minus_its_prompt_prefill():
    source = ScriptedSource()
    prompt_clock = _Clock(source, step=0.5, joules=5.0)  # prefill of the prompt: 0.5 s, 5 J
    meter = EnergyMeter([source], clock=prompt_clock)
    prompt = run_phase(meter, "prompt", prompt_clock.work, 2 * 16, min_s=1.0, repeats=2, clock=prompt_clock)
    gen_clock = _Clock(source, step=2.0, joules=35.0)  # a whole generation: 2 s, 35 J
    meter = EnergyMeter([source], clock=gen_clock)
    generate = run_phase(meter, "gen", gen_clock.work, 2 * 11, min_s=1.0, repeats=2, clock=gen_clock)
    d = decode_figures(generate, prompt, batch_size=2, new_tokens=11)
    # 2 sequences × 10 decode steps = 20 tokens in 1.5 s and 30 J
    assert d["j_per_token"] == pytest.approx(1.5)
    assert d["tokens_per_s"] == pytest.approx(20 / 1.5)
    assert d["ttft_s"] == pytest.approx(0.5)
    assert d["provenance"] == "counter"
