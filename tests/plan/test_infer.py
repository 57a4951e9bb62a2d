"""`wattlm plan infer`: the architecture's bytes and FLOPs computed by hand (GQA, MoE), the
compute/memory crossover, tensor parallel, the cache that fits, power from the step's load,
calibration on a measured load or bench run, the published measurements, and bad input."""

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from wattlm.errors import InvalidInputError
from wattlm.plan import InferRequest, lookup, plan_infer
from wattlm.plan.architecture import Architecture, ParamsOnly, from_config, load_config
from wattlm.plan.serving import ALLREDUCE_LATENCY_S, SCENARIOS, Efficiency, Workload, decode_step, max_batch
from wattlm.results import RunDir

WATTLM = [sys.executable, "-m", "wattlm"]
ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "bench" / "data" / "model_configs"
IDEAL = Efficiency(mbu_weights=1.0, mbu_kv=1.0, mfu=1.0, step_overhead_s=0.0)

TINY = {"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 4, "intermediate_size": 16, "vocab_size": 10, "tie_word_embeddings": False}  # fmt: skip


def write(tmp_path, config, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


# -- the architecture, by hand ----------------------------------------------------------------------


def test_parameters_and_cache_of_a_small_gqa_model_by_hand():
    a = from_config(TINY)
    # per layer: q 8·2·4 + o 2·4·8 = 128, k and v 8·1·4 each = 64, gated MLP 3·8·16 = 384, two norms 16
    assert a.attention_params == 192
    assert a.params_total == 2 * (192 + 384 + 16) + 10 * 8 * 2 + 8
    assert a.params_active == a.params_total - 10 * 8  # the input embedding is a lookup
    assert a.params_read(1) == a.params_active
    # 2 (k, v) · 2 layers · 1 kv head · 4 dims · 2 bytes
    assert a.kv_bytes_per_token(2) == 32
    assert from_config({**TINY, "num_key_value_heads": 2}).kv_bytes_per_token(2) == 64  # MHA: twice the cache
    # 2 FLOPs per active parameter + QKᵀ and AV: 4 · layers · heads · head_dim per token of context
    assert a.flops_per_token(100) == 2 * a.params_active + 4 * 2 * 2 * 4 * 100
    tied = from_config({**TINY, "tie_word_embeddings": True})
    assert tied.params_total == a.params_total - 80 and tied.params_read(1) == a.params_read(1)


def test_published_models_have_their_published_sizes():
    sizes = {"Llama-2-7b-hf": 6.74e9, "Meta-Llama-3-8B": 8.03e9, "Mistral-7B-v0.1": 7.24e9, "Qwen3-32B": 32.8e9}
    for name, published in sizes.items():
        assert load_config(CONFIGS / f"{name}.json").params_total == pytest.approx(published, rel=0.005)
    llama3 = load_config(CONFIGS / "Meta-Llama-3-8B.json")
    assert llama3.kv_bytes_per_token(2) == 2 * 32 * 8 * 128 * 2 == 131072  # GQA: 8 of 32 heads
    assert load_config(CONFIGS / "Llama-2-7b-hf.json").kv_bytes_per_token(2) == 4 * 131072


def test_mixtures_of_experts_and_latent_attention_have_their_published_sizes():
    # (total, active) as published; active counts here leave out the input embedding (a lookup)
    deepseek = load_config(CONFIGS / "DeepSeek-V3.json")
    assert deepseek.params_total == pytest.approx(671e9, rel=0.005)  # without the 14B prediction module
    assert deepseek.params_active == pytest.approx(37e9, rel=0.02)
    assert deepseek.kv_bytes_per_token(2) == 61 * (512 + 64) * 2  # the latent and the rope key, all heads
    mixtral = load_config(CONFIGS / "Mixtral-8x7B-v0.1.json")
    assert mixtral.params_total == pytest.approx(46.7e9, rel=0.005)
    assert mixtral.params_active == pytest.approx(12.9e9, rel=0.02)
    qwen = load_config(CONFIGS / "Qwen3-30B-A3B.json")
    assert qwen.params_total == pytest.approx(30.5e9, rel=0.005)
    assert qwen.params_active + qwen.embedding_params == pytest.approx(3.3e9, rel=0.02)


def test_a_mixture_of_experts_reads_the_experts_its_batch_picks():
    moe = from_config({**TINY, "num_local_experts": 8, "num_experts_per_tok": 2})
    expert = 3 * 8 * 16  # Mixtral style: the experts are intermediate_size wide
    fixed = 192 + 8 * 8 + 16  # attention, router d·E, norms
    assert moe.expert_params == expert
    assert moe.params_total == 2 * (fixed + 8 * expert) + 160 + 8
    assert moe.params_active == 2 * (fixed + 2 * expert) + 80 + 8
    assert moe.params_read(1) == moe.params_active  # one token: its own 2 experts
    # B tokens: 8·(1 − (6/8)^B) distinct experts per layer in expectation
    assert moe.params_read(4) == pytest.approx(2 * fixed + 88 + 2 * 8 * (1 - 0.75**4) * expert)
    assert moe.params_read(10_000) == pytest.approx(moe.params_total - 80)
    qwen = from_config({**TINY, "num_experts": 4, "num_experts_per_tok": 1, "moe_intermediate_size": 4,
                        "shared_expert_intermediate_size": 8})  # fmt: skip
    assert qwen.expert_params == 3 * 8 * 4 and qwen.shared_intermediate == 8
    assert qwen.params_active == 2 * (192 + 8 * 4 + 3 * 8 * 8 + 16 + 3 * 8 * 4) + 80 + 8


# -- the step -----------------------------------------------------------------------------------------


def test_decode_turns_compute_bound_where_the_batch_passes_peak_over_bandwidth():
    h100, model = lookup("H100-SXM"), ParamsOnly(8e9)
    crossover = h100.peak_flops("bf16") / (h100.bandwidth_gb_s * 1e9)  # FLOPs per byte: 2N·B / 2N bytes = B
    below = decode_step(model, h100, Workload(batch=int(crossover), prompt_tokens=0, output_tokens=1), IDEAL)
    above = decode_step(model, h100, Workload(batch=int(crossover) + 1, prompt_tokens=0, output_tokens=1), IDEAL)
    assert below.bound == "memory" and above.bound == "compute"
    assert below.time_s == pytest.approx(16e9 / 3350e9)
    assert above.time_s == pytest.approx(2 * 8e9 * (int(crossover) + 1) / 989.4e12)
    int4 = decode_step(model, h100, Workload(batch=1, prompt_tokens=0, output_tokens=1, precision="int4"), IDEAL)
    assert int4.memory_s == pytest.approx(below.memory_s / 4)


def test_the_cache_is_read_every_step_and_prompts_ride_in_chunked_steps():
    llama = load_config(CONFIGS / "Meta-Llama-3-8B.json")
    h100 = lookup("H100-SXM")
    work = Workload(batch=16, prompt_tokens=1000, output_tokens=200)
    step = decode_step(llama, h100, work, IDEAL)
    assert step.kv_bytes == 16 * 1100 * 131072  # B · (P + O/2) · KV bytes per token
    assert step.weight_bytes == llama.params_read(16) * 2
    assert step.memory_s == pytest.approx((step.weight_bytes + step.kv_bytes) / 3350e9)
    # chunked prefill: each step carries B·P/O = 80 prompt tokens at their mean context P/2
    assert step.flops == pytest.approx(16 * llama.flops_per_token(1100) + 80 * llama.flops_per_token(500))
    separate = decode_step(llama, h100, replace(work, chunked_prefill=False), IDEAL)
    assert separate.flops == pytest.approx(16 * llama.flops_per_token(1100))
    assert separate.prefill_s_per_request == pytest.approx(1000 * llama.flops_per_token(500) / 989.4e12)


def test_tensor_parallel_splits_the_bytes_and_adds_two_all_reduces_a_layer():
    qwen = load_config(CONFIGS / "Qwen3-32B.json")
    h100 = lookup("H100-SXM")
    one = decode_step(qwen, h100, Workload(batch=8, prompt_tokens=0, output_tokens=1), IDEAL)
    two = decode_step(qwen, h100, Workload(batch=8, prompt_tokens=0, output_tokens=1, devices=2), IDEAL)
    assert two.weight_bytes == pytest.approx(one.weight_bytes / 2) and one.comm_s == 0
    message = 8 * 5120 * 2  # B tokens · d · bf16
    assert two.comm_s == pytest.approx(2 * 64 * (ALLREDUCE_LATENCY_S + 2 * 0.5 * message / 450e9))
    assert two.time_s == pytest.approx(one.time_s / 2 + two.comm_s)
    # energy per token: two devices' power over the shorter step
    assert two.j_per_output_token == pytest.approx(2 * two.power_w * two.time_s / 8)


def test_power_follows_the_load_and_never_passes_the_tdp():
    h100 = lookup("H100-SXM")
    static, memory, compute = h100.power_levels()
    assert (static, memory, compute) == pytest.approx((140, 441, 665))
    eff = replace(IDEAL, step_overhead_s=0.004)
    step = decode_step(ParamsOnly(8e9), h100, Workload(batch=1, prompt_tokens=0, output_tokens=1), eff)
    busy = step.memory_s
    utilisation = step.flops / busy / 989.4e12
    want = ((memory + (compute - memory) * utilisation) * busy + static * 0.004) / (busy + 0.004)
    assert step.power_w == pytest.approx(want)
    assert step.j_per_output_token == pytest.approx(step.power_w * step.time_s)
    hot = decode_step(ParamsOnly(8e9), h100, Workload(batch=4096, prompt_tokens=0, output_tokens=1), IDEAL)
    assert hot.bound == "compute" and hot.power_w == pytest.approx(665)
    assert decode_step(ParamsOnly(8e9), h100, Workload(4096, 0, 1), replace(IDEAL, power_scale=2)).power_w == 700


def test_the_largest_batch_is_what_the_cache_holds_next_to_the_weights():
    llama = load_config(CONFIGS / "Meta-Llama-3-8B.json")
    work = Workload(batch=1, prompt_tokens=1024, output_tokens=1024)
    free = 80e9 * 0.9 - llama.params_total * 2
    assert max_batch(llama, lookup("H100-SXM"), work) == int(free // (1536 * 131072))
    assert max_batch(llama, lookup("EPYC-9654"), work) is None  # system memory: not in the catalogue
    with pytest.raises(InvalidInputError, match=r"holds at most \d+ sequences.*give batch ≤"):
        plan_infer(InferRequest(hardware="H100-SXM", model_config=CONFIGS / "Meta-Llama-3-8B.json", batch=5000))


# -- the plan -------------------------------------------------------------------------------------------


def test_the_plan_gives_serving_units_for_a_range_and_totals_for_a_volume():
    plan = plan_infer(
        InferRequest(
            hardware="H100-SXM",
            model_config=CONFIGS / "Llama-3.1-8B-Instruct.json",
            batch=64,
            prompt_tokens=512,
            output_tokens=483,
            tokens=995e6,
        )  # fmt: skip
    )
    s = plan["scenarios"]
    assert list(s) == ["low_energy", "central", "high_energy"]
    assert (
        s["low_energy"]["j_per_output_token"]
        < s["central"]["j_per_output_token"]
        < s["high_energy"]["j_per_output_token"]
    )
    c = s["central"]
    assert c["j_per_request"] == pytest.approx(483 * c["j_per_output_token"])
    assert c["itl_s"] == pytest.approx(64 / c["output_tokens_per_s"])
    assert c["requests"] == pytest.approx(1e6) and c["it_energy_kwh"] == pytest.approx(1e6 * c["j_per_request"] / 3.6e6)
    assert 0.2 * 700 < c["power_w"] < 700  # from the load, not the TDP
    assert plan["model"]["params_total"] == pytest.approx(8.03e9, rel=0.01)
    assert any("GQA" in a or "key/value heads" in a for a in plan["assumptions"])
    given = plan_infer(InferRequest(hardware="H100-SXM", params=8e9, mfu=0.5, mbu=0.8))["scenarios"]
    assert list(given) == ["central"]


def test_given_power_replaces_the_load_model():
    plan = plan_infer(InferRequest(hardware="TPU-v4", params=8e9, power_w=200))
    c = plan["scenarios"]["central"]
    assert c["power_w"] == 200 and c["j_per_output_token"] == pytest.approx(200 / c["output_tokens_per_s"])
    with pytest.raises(InvalidInputError, match="give the average power"):
        plan_infer(InferRequest(hardware="TPU-v4", params=8e9))


def load_run(tmp_path, *levels):
    run = RunDir.create(tmp_path / "load", "load", {"environment": {"cpu": "a VM"}})
    for batch, j, tok_s in levels:
        run.append(
            {
                "level": f"concurrency={batch}",
                "mode": "concurrency",
                "value": batch,
                "status": "ok",
                "j_per_output_token": j,
                "output_tokens_per_s": tok_s,
                "avg_power_w": None if j is None else j * tok_s,
                "request_throughput_per_s": tok_s / 64,
                "e2e_s": {"mean": batch * 64 / tok_s},  # Little's law gives the batch back
                "prompt_tokens_mean": 100,
                "output_tokens_mean": 64,
                "provenance": "estimated",
            }
        )
    return run.path


def test_calibrating_on_a_load_run_returns_the_measurement_and_scales_from_it(tmp_path):
    run = load_run(tmp_path, (1, 2.0, 10.0), (8, 0.5, 50.0))
    base = dict(hardware="EPYC-9654", params=1.7e9, prompt_tokens=100, output_tokens=64, from_run=run)
    same = plan_infer(InferRequest(**base, batch=8))
    c = same["scenarios"]["central"]
    assert list(same["scenarios"]) == ["central"]
    assert c["j_per_output_token"] == pytest.approx(0.5) and c["output_tokens_per_s"] == pytest.approx(50.0)
    assert c["power_w"] == pytest.approx(25.0) and same["calibration"]["level"] == "concurrency=8"
    assert any("carry over" in a for a in same["assumptions"])
    one = plan_infer(InferRequest(**base, batch=1))["scenarios"]["central"]
    assert one["j_per_output_token"] == pytest.approx(2.0)
    # a model twice the size, calibrated on the nearest level: the plan's own ratio times the measured factor
    k = same["calibration"]["k"]["energy"]
    bigger = plan_infer(InferRequest(**{**base, "params": 3.4e9}, batch=8, run_params=1.7e9))
    uncalibrated = plan_infer(InferRequest(**{**base, "params": 3.4e9, "from_run": None}, batch=8))
    assert bigger["scenarios"]["central"]["j_per_output_token"] == pytest.approx(
        k * uncalibrated["scenarios"]["central"]["j_per_output_token"]
    )
    with pytest.raises(InvalidInputError, match="no level with measured energy"):
        plan_infer(InferRequest(**{**base, "from_run": load_run(tmp_path / "x", (1, None, 10.0))}))


def bench_run(tmp_path, prefill_j, decode_j, params=1e9):
    run = RunDir.create(
        tmp_path / "run",
        "bench",
        {"environment": {"gpu": "NVIDIA H100 80GB HBM3", "cpu": "AMD EPYC", "device": "cuda"}},
    )
    run.append(
        {
            "variant": "bf16",
            "status": "ok",
            "dtype": "bf16",
            "params_total": params,
            "provenance": "counter",
            "prefill": {"j_per_token": prefill_j},
            "decode": [{"batch_size": 1, "j_per_token": decode_j}],
        }
    )
    return run.path


def test_calibrating_on_a_bench_run_reproduces_its_phases(tmp_path):
    path = bench_run(tmp_path, prefill_j=0.01, decode_j=2.0)
    same = plan_infer(InferRequest(params=1e9, hardware="H100-SXM", from_run=path, chunked_prefill=False))
    c = same["scenarios"]["central"]
    assert c["prefill_j_per_token"] == pytest.approx(0.01) and c["decode_j_per_token"] == pytest.approx(2.0)
    assert c["j_per_output_token"] == pytest.approx(2.0 + 0.01 * 512 / 256)
    assert c["output_tokens_per_s"] is None and same["calibration"]["hardware"] == "H100-SXM"  # energy only
    # a bigger model: the plan's own decode estimate times the measured factor k
    bigger = plan_infer(InferRequest(params=4e9, hardware="H100-SXM", from_run=path, chunked_prefill=False))
    k = same["calibration"]["k"]["decode"]
    step = decode_step(ParamsOnly(4e9), lookup("H100-SXM"), Workload(1, 512, 256, chunked_prefill=False),
                       SCENARIOS["central"])  # fmt: skip
    assert bigger["scenarios"]["central"]["decode_j_per_token"] == pytest.approx(k * step.power_w * step.time_s)
    with pytest.raises(InvalidInputError, match="not a wattlm bench or load run folder"):
        plan_infer(InferRequest(params=1e9, hardware="H100-SXM", from_run=tmp_path))
    with pytest.raises(InvalidInputError, match="no variant 'int8'"):
        plan_infer(InferRequest(params=1e9, hardware="H100-SXM", from_run=path, run_variant="int8"))
    with pytest.raises(InvalidInputError, match="leave out mfu and mbu"):
        InferRequest(params=1e9, hardware="H100-SXM", from_run=path, mfu=0.5)


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, words",
    [
        ("{not json", "not a JSON config"),
        ({"hidden_size": 8}, "lacks num_hidden_layers, num_attention_heads, vocab_size"),
        ({**TINY, "num_key_value_heads": 3}, "cannot share 3 key/value heads evenly"),
        ({**TINY, "num_local_experts": 4, "num_experts_per_tok": 6}, "6 experts per token out of 4"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_bad_model_configs_are_refused(tmp_path, config, words):
    path = tmp_path / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    with pytest.raises(InvalidInputError, match=words):
        plan_infer(InferRequest(hardware="H100-SXM", model_config=path))


def test_inconsistent_or_impossible_requests_are_refused(tmp_path):
    moe = write(tmp_path, {**TINY, "num_local_experts": 8, "num_experts_per_tok": 2})
    with pytest.raises(InvalidInputError, match="8 experts of 16 wide, 2 per token.*params says"):
        plan_infer(InferRequest(hardware="H100-SXM", model_config=moe, params=1e3))
    with pytest.raises(InvalidInputError, match="2 attention heads; give devices ≤ 2"):
        plan_infer(InferRequest(hardware="H100-SXM", model_config=moe, devices=4))
    with pytest.raises(InvalidInputError, match="do not split evenly over 3 devices"):
        plan_infer(InferRequest(hardware="H100-SXM", model_config=CONFIGS / "Qwen3-32B.json", devices=3))
    with pytest.raises(InvalidInputError, match="weights need 140.0 GB"):
        plan_infer(InferRequest(hardware="H100-SXM", params=70e9))
    with pytest.raises(InvalidInputError, match="unknown hardware 'H1OO'; closest: H100"):
        InferRequest(hardware="H1OO", params=8e9)
    with pytest.raises(InvalidInputError, match="give the model"):
        InferRequest(hardware="H100-SXM")
    with pytest.raises(InvalidInputError, match="no such file"):
        plan_infer(InferRequest(hardware="H100-SXM", model_config=tmp_path / "missing.json"))


def test_cli_plans_from_a_model_config_and_refuses_in_one_line(tmp_path):
    config = str(CONFIGS / "Meta-Llama-3-8B.json")
    r = subprocess.run(
        [*WATTLM, "plan", "infer", "--model-config", config, "--hardware", "A100-40GB", "--batch", "32",
         "--prompt-tokens", "1024", "--output-tokens", "1024", "--no-chunked-prefill", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    central = plan["scenarios"]["central"]
    # Argonne LLM-Inference-Bench measured 0.200 J per output token (TensorRT-LLM) and 0.225 (vLLM) here
    assert abs(math.log(central["j_per_output_token"] / 0.2)) < 0.3
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    for args, words in (
        (["--model-config", str(bad), "--hardware", "H100"], "not a JSON config"),
        (["--model-config", config, "--hardware", "H100", "--batch", "100000"], "give --batch ≤"),
        (["--model-config", config, "--hardware", "H100", "--devices", "64"], "give --devices ≤ 32"),
    ):
        r = subprocess.run([*WATTLM, "plan", "infer", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_every_published_measurement_names_its_source_and_a_known_model():
    sys.path.insert(0, str(ROOT / "bench"))
    import plan_validation

    rows = plan_validation.rows(plan_validation.DATA)
    assert len(rows) >= 50
    for row in rows:
        assert row["source"] and (CONFIGS / f"{row['model_config']}.json").is_file()
        assert float(row["measured_j_per_output_token"]) > 0 and lookup(row["hardware"])
    one = plan_validation.predict(rows[0])
    assert one["range"][0] < one["predicted_j_per_output_token"] < one["range"][1]
    assert Architecture  # the public type of a loaded config
    assert SCENARIOS["central"].mbu_weights == 0.8
