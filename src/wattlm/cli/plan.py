"""`wattlm plan train | infer | hardware`: the planner's commands (a typer sub-app)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..plan.infer import InferRequest
from ..plan.train import TrainRequest
from .facility import FACILITY, Cooling, Currency, Intensity, Price, Pue, Region

plan_app = typer.Typer(
    no_args_is_help=True, help="Predict energy, time, CO2e and cost before a run (offline, documented formulas)."
)
out = Console()
err = Console(stderr=True)

Json = Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")]


def train_default(name: str) -> Any:
    """A TrainRequest field's default (the request needs some fields, so it has no default instance)."""
    return next(f.default for f in dataclasses.fields(TrainRequest) if f.name == name)


def infer_default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(InferRequest) if f.name == name)


def _g(value: float | None, fmt: str = ",.3g") -> str:
    return "—" if value is None else format(value, fmt)


def _show(plan: dict[str, Any], columns: list[tuple[str, str, str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(plan, indent=2, ensure_ascii=False))
        return
    titles = {
        "flops": "wattlm plan train (from FLOPs)",
        "direct": "wattlm plan train (from device-hours)",
        "infer": "wattlm plan infer (serving, per device: power from the step's load)",
    }
    table = Table(title=titles[plan["mode"]])
    table.add_column("scenario")
    for title, _, _ in columns:
        table.add_column(title, justify="right")
    for name, row in plan["scenarios"].items():
        table.add_row(name, *(_g(row.get(key), fmt) for _, key, fmt in columns))
    out.print(table)
    carbon = plan["carbon"]
    where = (
        f"{carbon['region']} {carbon['g_per_kwh']:g} g/kWh"
        f" ({carbon['source']}{', ' + str(carbon['year']) if carbon['year'] else ''})"
    )
    lines = [f"carbon: {where}" + (" — the default; give --region or --intensity" if carbon["defaulted"] else "")]
    lines.append(
        f"facility: PUE {plan['facility']['pue']:g}"
        if plan["facility"]["method"] == "pue"
        else "facility: cooling model"
    )
    lines += plan["assumptions"]
    for line in lines:
        err.print(Text(f"· {line}", "dim"))
    for warning in plan.get("warnings", []):
        err.print(Text(f"! {warning}", "yellow"))


@plan_app.command()
def train(
    params: Annotated[Optional[float], typer.Option(help="Parameters N, e.g. 7e9.")] = train_default("params"),
    tokens: Annotated[Optional[float], typer.Option(help="Training tokens D, e.g. 2e12.")] = train_default("tokens"),
    hardware: Annotated[
        Optional[str], typer.Option(help="Device name from `wattlm plan hardware`, e.g. A100-80GB, H100-SXM.")
    ] = train_default("hardware"),
    devices: Annotated[Optional[int], typer.Option(help="Number of devices.")] = train_default("devices"),
    mfu: Annotated[
        Optional[float], typer.Option(help="Model FLOPs utilisation in (0, 1]. Default: a range 0.3–0.5.")
    ] = train_default("mfu"),
    precision: Annotated[str, typer.Option(help="Peak to use: fp32, bf16, fp16, fp8, int8.")] = train_default(
        "precision"
    ),
    layers: Annotated[
        Optional[int], typer.Option(help="With --d-model and --seq-len: count attention FLOPs too.")
    ] = train_default("layers"),
    d_model: Annotated[Optional[int], typer.Option(help="Model width.")] = train_default("d_model"),
    seq_len: Annotated[Optional[int], typer.Option(help="Training sequence length.")] = train_default("seq_len"),
    gpu_hours: Annotated[
        Optional[float], typer.Option(help="Direct mode: device-hours already known.")
    ] = train_default("gpu_hours"),
    power_w: Annotated[
        Optional[float], typer.Option(help="Average power per device in W (default: the TDP).")
    ] = train_default("power_w"),
    region: Region = None,
    intensity: Intensity = None,
    pue: Pue = FACILITY.pue,
    cooling: Cooling = None,
    price_per_kwh: Price = None,
    currency: Currency = FACILITY.currency,
    as_json: Json = False,
) -> None:
    """Energy, time, CO2e and cost of a training run: FLOPs = 6·N·D over peak × MFU, or known device-hours."""
    from ..energy.facility import facility_from_options
    from ..plan.train import TrainRequest, plan_train

    facility = facility_from_options(pue, cooling, region, intensity, price_per_kwh, currency)
    request = TrainRequest(
        params=params,
        tokens=tokens,
        hardware=hardware,
        devices=devices,
        mfu=mfu,
        precision=precision,
        layers=layers,
        d_model=d_model,
        seq_len=seq_len,
        gpu_hours=gpu_hours,
        power_w=power_w,
        facility=facility,
    )
    plan = plan_train(request)
    if not as_json and plan.get("flops"):
        err.print(Text(f"· FLOPs {plan['flops']:.3g} ({plan['flops_formula']})", "dim"))
    cost = f"cost {plan['currency']}" if plan["currency"] else "cost"
    columns = [
        ("MFU", "mfu", ".2f"),
        ("device-hours", "device_hours", ",.0f"),
        ("wall h", "wall_time_h", ",.1f"),
        ("IT kWh", "it_energy_kwh", ",.0f"),
        ("facility kWh", "facility_energy_kwh", ",.0f"),
        ("t CO2e", "co2e_t", ",.2f"),
        (cost, "cost", ",.0f"),
    ]
    _show(plan, columns, as_json)


@plan_app.command()
def infer(
    hardware: Annotated[str, typer.Option(help="Device name from `wattlm plan hardware`, e.g. H100-SXM.")],
    model_config: Annotated[
        Optional[Path],
        typer.Option(help="The model's Hugging Face config.json (or its folder): layers, heads, GQA, MoE experts."),
    ] = infer_default("model_config"),
    params: Annotated[
        Optional[float], typer.Option(help="Parameters N, e.g. 8e9 (without --model-config: a dense model).")
    ] = infer_default("params"),
    tokens: Annotated[
        Optional[float], typer.Option(help="A volume to total, prompt and output tokens together, e.g. 1e9.")
    ] = infer_default("tokens"),
    batch: Annotated[int, typer.Option(help="Sequences decoded together (the server's max batch).")] = infer_default(
        "batch"
    ),
    prompt_tokens: Annotated[int, typer.Option(help="Prompt tokens per request.")] = infer_default("prompt_tokens"),
    output_tokens: Annotated[int, typer.Option(help="Generated tokens per request.")] = infer_default("output_tokens"),
    precision: Annotated[str, typer.Option(help="Weights: fp32, bf16, fp16, fp8, int8, int4.")] = infer_default(
        "precision"
    ),
    kv_precision: Annotated[
        Optional[str], typer.Option(help="Key/value cache: bf16 (default), fp8, fp32.")
    ] = infer_default("kv_precision"),
    devices: Annotated[
        int, typer.Option(help="Devices holding one copy of the model (tensor parallel).")
    ] = infer_default("devices"),
    chunked_prefill: Annotated[
        bool, typer.Option(help="Prompt tokens ride in decode steps (vLLM V1, SGLang) or take their own.")
    ] = infer_default("chunked_prefill"),
    mfu: Annotated[
        Optional[float], typer.Option(help="Compute utilisation in (0, 1]. Default: a range.")
    ] = infer_default("mfu"),
    mbu: Annotated[
        Optional[float], typer.Option(help="Memory-bandwidth utilisation of weight reads in (0, 1]. Default: a range.")
    ] = infer_default("mbu"),
    power_w: Annotated[
        Optional[float], typer.Option(help="Average power per device in W (default: from the step's load).")
    ] = infer_default("power_w"),
    layers: Annotated[
        Optional[int], typer.Option(help="Without --model-config, with --d-model: a multi-head-attention cache.")
    ] = infer_default("layers"),
    d_model: Annotated[Optional[int], typer.Option(help="Model width.")] = infer_default("d_model"),
    from_run: Annotated[
        Optional[Path], typer.Option("--from", help="Calibrate on a measured wattlm load or bench run folder.")
    ] = infer_default("from_run"),
    run_hardware: Annotated[
        Optional[str], typer.Option(help="--from: the run's device, when the run does not name it (VMs).")
    ] = infer_default("run_hardware"),
    run_variant: Annotated[
        Optional[str], typer.Option(help="--from a bench run: which variant (default: its baseline).")
    ] = infer_default("run_variant"),
    run_model_config: Annotated[
        Optional[Path], typer.Option(help="--from: the measured model's config.json (default: the planned model).")
    ] = infer_default("run_model_config"),
    run_params: Annotated[
        Optional[float], typer.Option(help="--from: the measured model's parameters (default: the planned model).")
    ] = infer_default("run_params"),
    region: Region = None,
    intensity: Intensity = None,
    pue: Pue = FACILITY.pue,
    cooling: Cooling = None,
    price_per_kwh: Price = None,
    currency: Currency = FACILITY.currency,
    as_json: Json = False,
) -> None:
    """J per output token, J per request, output tok/s and ITL of serving, from the model's shape, the device and
    the load (a central case and a range), and totals for a volume."""
    from ..energy.facility import facility_from_options
    from ..plan.infer import InferRequest, plan_infer

    facility = facility_from_options(pue, cooling, region, intensity, price_per_kwh, currency)
    request = InferRequest(
        hardware=hardware,
        params=params,
        model_config=model_config,
        tokens=tokens,
        batch=batch,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        precision=precision,
        kv_precision=kv_precision,
        devices=devices,
        chunked_prefill=chunked_prefill,
        mfu=mfu,
        mbu=mbu,
        power_w=power_w,
        layers=layers,
        d_model=d_model,
        from_run=from_run,
        run_hardware=run_hardware,
        run_variant=run_variant,
        run_model_config=run_model_config,
        run_params=run_params,
        facility=facility,
    )
    plan = plan_infer(request)
    cost = f"cost {plan['currency']}" if plan["currency"] else "cost"
    columns = [
        ("J/output tok", "j_per_output_token", ".3g"),
        ("J/request", "j_per_request", ".3g"),
        ("output tok/s", "output_tokens_per_s", ",.0f"),
        ("ITL ms", "itl_ms", ",.1f"),
        ("W/device", "power_w", ",.0f"),
        ("bound", "decode_bound", ""),
    ]
    if request.tokens is not None:
        columns += [
            ("facility kWh", "facility_energy_kwh", ",.0f"),
            ("t CO2e", "co2e_t", ",.3f"),
            (cost, "cost", ",.0f"),
        ]
    if not as_json:
        for row in plan["scenarios"].values():
            row["itl_ms"] = None if row.get("itl_s") is None else row["itl_s"] * 1000
    _show(plan, columns, as_json)


@plan_app.command("hardware")
def hardware_list(as_json: Json = False) -> None:
    """The hardware catalogue: power, dense peaks, memory and bandwidth, with sources."""
    from ..plan.catalogue import catalogue

    rows = [hw.to_dict() for hw in catalogue().values()]
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title="wattlm plan hardware (dense peaks)")
    for title in ("name", "TDP W", "bf16/fp16 TFLOPS", "fp8 TFLOPS", "int8 TOPS", "memory GB", "GB/s"):
        table.add_column(title, justify="left" if title == "name" else "right")
    for r in rows:
        p = r["peak_tflops"]
        table.add_row(
            r["name"],
            _g(r["tdp_w"], "g"),
            _g(p.get("bf16") or p.get("fp16"), "g"),
            _g(p.get("fp8"), "g"),
            _g(p.get("int8"), "g"),
            _g(r["memory_gb"], "g"),
            _g(r["bandwidth_gb_s"], "g"),
        )
    out.print(table)
    err.print(Text("sources: `wattlm plan hardware --json`, or src/wattlm/plan/data/hardware.csv", "dim"))
