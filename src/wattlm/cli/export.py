"""`wattlm export`: a model (as wattlm left it: compressed, pruned, trained) → a GGUF file for llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import quiet_loaders


def export(
    out: Annotated[Path, typer.Option(help="The .gguf file to write (must not exist).")],
    model: Annotated[
        Optional[str],
        typer.Option(
            help=(
                "Hub id, model folder (also wattlm compress / train output) or .gguf file. Default: the embedded"
                " SmolLM2-135M-Instruct."
            )
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Output format (gguf).")] = "gguf",
    quant: Annotated[
        str,
        typer.Option(
            help=(
                "GGUF type: f32, f16, q8_0, q6_k, q5_k_m, q5_k_s, q5_1, q5_0, q4_k_m, q4_k_s, q4_1, q4_0, iq4_nl,"
                " q3_k_l, q3_k_m, q3_k_s or q2_k (llama.cpp's quantizer); or gptq-q4_0, gptq-q4_1, gptq-iq4_nl,"
                " gptq-q8_0: GPTQ calibrated by wattlm onto that type's blocks."
            )
        ),
    ] = "q8_0",
    threads: Annotated[
        Optional[int], typer.Option(help="Threads for llama.cpp's quantizer (default: all cores).")
    ] = None,
    calib_text: Annotated[
        Optional[Path],
        typer.Option(help="gptq-*: calibration text. Default: the default text after the tokens wattlm bench scores."),
    ] = None,
    calib_samples: Annotated[int, typer.Option(help="gptq-*: calibration windows of --seq-len tokens.")] = 128,
    seq_len: Annotated[int, typer.Option(help="gptq-*: tokens per calibration window.")] = 512,
    size_budget: Annotated[
        Optional[float],
        typer.Option(
            help=(
                "gptq-*: MiB of weights the file may hold; the most sensitive layers (measured KL) go to Q8_0"
                " within it, the token embeddings first."
            )
        ),
    ] = None,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Allow the model's own Python code to run.")
    ] = False,
    offline: Annotated[bool, typer.Option(help="Never touch the network; use the cache only.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
) -> None:
    """Export a Llama-family model to GGUF (F32, F16 and gptq-* by wattlm, other types by llama.cpp's quantizer)."""
    from ..engines.export import run_export
    from ..errors import ConfigError

    if threads is not None and threads < 1:
        raise ConfigError(f"{{threads}} must be at least 1, got {threads}", field="threads", value=threads)
    quiet_loaders()
    info = run_export(
        model,
        out,
        quant.lower(),
        fmt=fmt,
        offline=offline,
        trust_remote_code=trust_remote_code,
        threads=threads,
        calib_text=calib_text,
        calib_samples=calib_samples,
        seq_len=seq_len,
        size_budget_mib=size_budget,
    )
    if as_json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return
    tok = info["tokenizer"]
    how = (
        "copied from the source GGUF"
        if "pre" not in tok
        else f"from the Hugging Face tokenizer, pre-tokenizer {tok['pre']!r}"
    )
    agree = "agrees with" if tok["probe_agrees"] else "DIFFERS from"
    print(
        f"{info['file']}: {info['type'].upper()}, {info['bytes'] / 2**20:,.1f} MiB, {info['loaded_params']:,}"
        f" parameters, {info['layers']} layers; tokenizer {how} (llama.cpp's tokenization {agree} transformers' on a"
        f" {tok['probe_tokens']}-token probe)"
    )
