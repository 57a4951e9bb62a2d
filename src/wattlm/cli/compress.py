"""`wattlm compress`: quantize, prune or share a model's weights and save it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..compress.run import CompressRequest
from .common import ProgressView, quiet_loaders, warn

D = CompressRequest(technique="", out=Path())  # the defaults shown and used: the request's own


def compress(
    technique: Annotated[
        str,
        typer.Option(
            help=(
                "int8, w8a8, int4, gptq, fp8, prune, struct, share — or variant names such as gptq4-g128, w8a8-smooth,"
                " wanda50, "
                "sparsegpt-2:4, struct25, struct25-layers, share2, joined by + to chain them (wanda50+int8)."
            )
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder to write (must not exist or be empty).")],
    model: Annotated[
        Optional[str],
        typer.Option(help="Hub id, model folder or .gguf file. Default: the embedded SmolLM2-135M-Instruct."),
    ] = D.model,
    bits: Annotated[Optional[int], typer.Option(help="gptq: 2, 3 or 4.")] = D.bits,
    group_size: Annotated[
        Optional[int], typer.Option(help="int4/gptq: weights per scale (must divide every layer's input width).")
    ] = D.group_size,
    asymmetric: Annotated[
        bool, typer.Option("--asymmetric", help="int4/gptq: min-max grid with an offset instead of a symmetric one.")
    ] = D.asymmetric,
    smooth: Annotated[
        bool, typer.Option("--smooth", help="w8a8: SmoothQuant scaling, α calibrated per layer unless --alpha.")
    ] = D.smooth,
    alpha: Annotated[Optional[float], typer.Option(help="w8a8 --smooth: fixed α in [0, 1].")] = D.alpha,
    keep: Annotated[
        str,
        typer.Option(
            help=(
                "Comma-separated module-name patterns left as they are, e.g. lm_head,*.down_proj (pruning keeps lm_head"
                " by default)."
            )
        ),
    ] = ",".join(D.keep),
    sparsity: Annotated[
        Optional[float], typer.Option(help="prune: fraction of weights zeroed, in [0, 1).")
    ] = D.sparsity,
    scope: Annotated[
        Optional[str], typer.Option(help="prune: where the sparsity holds exactly: layer, row or global.")
    ] = D.scope,
    recover_steps: Annotated[
        int,
        typer.Option(
            help=(
                "After compressing, fine-tune this many steps on the calibration text with pruned weights held at zero."
            )
        ),
    ] = D.recover_steps,
    dtype: Annotated[str, typer.Option(help="Precision of everything not quantized: fp32, bf16 or fp16.")] = D.dtype,
    calib_text: Annotated[
        Optional[Path],
        typer.Option(help="Calibration text (gptq, --smooth). Default: the default text after its first 8,192 tokens."),
    ] = D.calib_text,
    calib_samples: Annotated[int, typer.Option(help="Calibration windows.")] = D.calib_samples,
    seq_len: Annotated[int, typer.Option(help="Tokens per calibration window.")] = D.seq_len,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto (where calibration runs).")] = D.device,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help="Allow the model's own Python code to run.")
    ] = D.trust_remote_code,
    offline: Annotated[bool, typer.Option(help="Never touch the network; use the cache only.")] = D.offline,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON.")] = False,
) -> None:
    """Quantize, prune or share a model's weights and save it (safetensors) so that wattlm bench --model OUT and
    wattlm.compress.load read it (pruned models load with transformers' from_pretrained too)."""
    from ..compress.run import run_compress

    request = CompressRequest(
        technique=technique,
        out=out,
        model=model,
        bits=bits,
        group_size=group_size,
        asymmetric=asymmetric,
        smooth=smooth,
        alpha=alpha,
        keep=tuple(k.strip() for k in keep.split(",") if k.strip()),
        sparsity=sparsity,
        scope=scope,
        recover_steps=recover_steps,
        dtype=dtype,
        calib_text=calib_text,
        calib_samples=calib_samples,
        seq_len=seq_len,
        device=device,
        trust_remote_code=trust_remote_code,
        offline=offline,
    )
    quiet_loaders()
    with ProgressView() as progress:
        summary = run_compress(request, progress=progress)
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    for warning in summary["warnings"]:
        warn(warning)
    for step in summary["steps"]:
        print(f"{step['name']}: {_step_line(step)} in {step['seconds']:.1f} s")
    nonzero = summary["params_nonzero"]
    print(
        f"{summary['params_before']:,} → {summary['params_after']:,} parameters"
        + (f" ({nonzero:,} non-zero)" if nonzero is not None and nonzero != summary["params_after"] else "")
        + f"; {summary['bytes_before'] / 2**20:,.1f} MiB → {summary['bytes_after'] / 2**20:,.1f} MiB on disk; saved to"
        f" {summary['out']}"
    )


def _step_line(step: dict[str, Any]) -> str:
    """What one compression step did, in words."""
    details, kernel = step["details"], step["kernel"]
    if step["config"] is None:  # recovery fine-tuning
        return (
            f"fine-tuned, loss {details['first_loss']:.3f} → {details['last_loss']:.3f}, {details['held_zeros']:,}"
            " zeros held"
        )
    technique = step["config"]["technique"]
    if technique == "prune":
        return (
            f"{details['layers_pruned']} layers pruned to {details['sparsity']:.1%} zeros; dense kernels (no speed-up)"
        )
    if technique == "struct":
        return (
            f"{details['fraction_removed']:.1%} of the parameters removed ({details['params_before']:,} →"
            f" {details['params_after']:,})"
        )
    if technique == "share":
        return f"{len(details['shared'])} linear layers shared in {len(details['groups'])} groups"
    return f"{step['layers']} layers quantized; kernel {kernel['kernel'] or 'none (fallback)'}"
