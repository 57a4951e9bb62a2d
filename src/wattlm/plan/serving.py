"""Serving under concurrency: one decode step of a continuously batched server, its time and its
power, and from them J per output token, output tok/s and the inter-token latency.

Per device, with B sequences decoding, T devices in tensor parallel and a mean context c:

    weights   W   = parameters read in the step (MoE: the experts the batch touches) · bytes / T
    cache     K   = B · c · KV bytes per token / T
    memory    t_m = W / (BW · MBU_w) + K / (BW · MBU_kv)       attention kernels read the cache less
                                                               efficiently than GEMVs stream weights
    compute   t_c = F / (peak · MFU),  F = (B + Bp) · FLOPs per token / T
    comm.     t_x = 2 · layers · (α + 2·(T−1)/T · B'·d·2 bytes / link)   two all-reduces a layer (T > 1)
    step      t   = max(t_m, t_c) + t_x + t0                    t0: the engine's fixed cost of a step
Bp, the prompt tokens a step carries: with chunked prefill every step carries B·P/O of them
(each request brings P prompt tokens per O output tokens) and they ride on the step's weight reads;
without it the prompts are read in steps of their own, compute-bound, added to the time.

Power per device follows the step's load (not the TDP): `static` while the step's fixed cost and
communication run, and while busy `memory_bound + (compute_bound − memory_bound) · u`, u = the
step's FLOP rate over the device peak; never above the TDP.

    J per output token = T · (average power) · t / B          output tok/s = B / t       ITL = t
"""

from __future__ import annotations

from dataclasses import dataclass

from .architecture import Shape
from .catalogue import BYTES_PER_PARAM, Hardware

ALLREDUCE_LATENCY_S = 10e-6  # one NCCL all-reduce's fixed latency inside a node (NVLink), order of magnitude


@dataclass(frozen=True)
class Efficiency:
    """How close the engine gets to the hardware: one scenario of the plan."""

    mbu_weights: float  # share of the memory bandwidth reached streaming weights
    mbu_kv: float  # … reading the key/value cache in attention
    mfu: float  # share of the dense peak reached in compute-bound work
    step_overhead_s: float  # fixed cost per step: scheduling, kernel launches
    sequence_overhead_s: float = 0.0  # … and per running sequence: sampling, detokenising, streaming
    power_scale: float = 1.0  # the device's power levels × this

    def overhead_s(self, batch: int) -> float:
        return self.step_overhead_s + self.sequence_overhead_s * batch


# low energy / central / high energy. Sources and the fit are in docs/report-and-plan.md: MBU for
# weight streaming 0.8 and t0 = 2 ms reproduce batch-1 decode of 7-8B models on A100 and H100 under
# vLLM and TensorRT-LLM (Argonne LLM-Inference-Bench); paged attention reads the cache at about 0.55.
SCENARIOS = {
    "low_energy": Efficiency(
        mbu_weights=0.9, mbu_kv=0.75, mfu=0.6, step_overhead_s=0.5e-3, sequence_overhead_s=0.0, power_scale=0.9
    ),
    "central": Efficiency(mbu_weights=0.8, mbu_kv=0.55, mfu=0.5, step_overhead_s=2e-3, sequence_overhead_s=20e-6),
    "high_energy": Efficiency(
        mbu_weights=0.6, mbu_kv=0.4, mfu=0.35, step_overhead_s=8e-3, sequence_overhead_s=300e-6, power_scale=1.1
    ),
}


def compute_peak(hw: Hardware, precision: str) -> float:
    """FLOP/s of the device at the precision the step computes in: quantized weights (int8, int4) without a
    published integer peak compute at the activations' precision (weight-only quantization, as llama.cpp
    and AWQ/GPTQ kernels do), the fastest float peak the device has."""
    if precision in ("int8", "int4") and "int8" not in hw.peak_tflops:
        for fallback in ("bf16", "fp16", "fp32"):
            if fallback in hw.peak_tflops:
                return hw.peak_flops(fallback)
    return hw.peak_flops(precision)


@dataclass(frozen=True)
class Workload:
    batch: int  # sequences decoding together (a server's max batch under enough load)
    prompt_tokens: int
    output_tokens: int
    devices: int = 1  # tensor parallel
    precision: str = "bf16"  # weights
    kv_precision: str = "bf16"
    chunked_prefill: bool = True


@dataclass(frozen=True)
class Step:
    """One decode step and what it means per token."""

    time_s: float
    memory_s: float
    compute_s: float
    comm_s: float
    bound: str  # "memory" or "compute"
    power_w: float  # per device, averaged over the step
    prefill_s_per_request: float  # prompt reading outside the steps (no chunked prefill), per request
    j_per_output_token: float
    output_tokens_per_s: float
    weight_bytes: float  # per device per step
    kv_bytes: float
    flops: float

    @property
    def itl_s(self) -> float:
        return self.time_s


def decode_step(
    arch: Shape, hw: Hardware, work: Workload, eff: Efficiency, power_levels: tuple[float, float, float] | None = None
) -> Step:
    """One decode step; `power_levels` (static, memory-bound, compute-bound W) replace the catalogue's."""
    T, B = work.devices, work.batch
    wbytes, kvbytes = BYTES_PER_PARAM[work.precision], BYTES_PER_PARAM[work.kv_precision]
    context = work.prompt_tokens + work.output_tokens / 2.0  # mean context while decoding
    bandwidth = hw.bandwidth_gb_s * 1e9
    peak = compute_peak(hw, work.precision)

    weights = arch.params_read(B) * wbytes / T
    kv = B * context * arch.kv_bytes_per_token(kvbytes) / T
    memory_s = weights / (bandwidth * eff.mbu_weights) + kv / (bandwidth * eff.mbu_kv)

    decode_flops = B * arch.flops_per_token(context)
    prompt_per_step = B * work.prompt_tokens / work.output_tokens  # prompt tokens per step, averaged
    prompt_flops = prompt_per_step * arch.flops_per_token(work.prompt_tokens / 2.0)
    flops = (decode_flops + (prompt_flops if work.chunked_prefill else 0.0)) / T
    compute_s = flops / (peak * eff.mfu)

    comm_s = 0.0
    if T > 1 and arch.layers and arch.hidden:
        link = hw.interconnect_gb_s * 1e9 if hw.interconnect_gb_s else bandwidth / 10
        tokens = B + (prompt_per_step if work.chunked_prefill else 0.0)
        message = tokens * arch.hidden * 2.0  # activations in bf16
        comm_s = 2 * arch.layers * (ALLREDUCE_LATENCY_S + 2.0 * (T - 1) / T * message / link)

    busy_s = max(memory_s, compute_s)
    overhead_s = eff.overhead_s(B)
    time_s = busy_s + comm_s + overhead_s
    levels = power_levels or tuple(w * eff.power_scale for w in hw.power_levels())
    static_w, memory_w, compute_w = levels
    utilisation = min(1.0, flops / busy_s / peak) if busy_s > 0 else 0.0
    busy_w = memory_w + (compute_w - memory_w) * utilisation
    power_w = (busy_w * busy_s + static_w * (comm_s + overhead_s)) / time_s
    if hw.tdp_w:
        power_w = min(power_w, hw.tdp_w)

    prefill_s = 0.0
    if not work.chunked_prefill:
        # prompts read in their own compute-bound steps (their weight reads amortised over many tokens)
        prefill_s = work.prompt_tokens * arch.flops_per_token(work.prompt_tokens / 2.0) / T / (peak * eff.mfu)
    # energy per request spread over its output tokens: its share of B-wide steps, plus its own prefill
    prefill_w = compute_w if hw.tdp_w is None else min(compute_w, hw.tdp_w)
    j_per_token = T * (power_w * time_s / B + prefill_w * prefill_s / work.output_tokens)
    time_per_token = time_s / B + prefill_s / work.output_tokens
    return Step(
        time_s=time_s,
        memory_s=memory_s,
        compute_s=compute_s,
        comm_s=comm_s,
        bound="memory" if memory_s >= compute_s else "compute",
        power_w=power_w,
        prefill_s_per_request=prefill_s,
        j_per_output_token=j_per_token,
        output_tokens_per_s=1.0 / time_per_token,
        weight_bytes=weights,
        kv_bytes=kv,
        flops=flops,
    )


def max_batch(arch: Shape, hw: Hardware, work: Workload, memory_share: float = 0.9) -> int | None:
    """The most sequences whose key/value cache fits next to the weights in
    `memory_share` of the devices' memory (vLLM's default gpu_memory_utilization); None when the catalogue
    gives no memory size (CPUs: system memory)."""
    if not hw.memory_gb:
        return None
    free = hw.memory_gb * 1e9 * work.devices * memory_share - arch.params_total * BYTES_PER_PARAM[work.precision]
    # a sequence holds its prompt and, on average over its life, half its answer (vLLM allocates cache
    # blocks as tokens are generated)
    per_sequence = (work.prompt_tokens + work.output_tokens / 2.0) * arch.kv_bytes_per_token(
        BYTES_PER_PARAM[work.kv_precision]
    )
    if per_sequence <= 0:
        return None
    return max(0, int(free // per_sequence))
