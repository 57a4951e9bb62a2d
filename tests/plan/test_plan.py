"""`wattlm plan`: published training runs reproduced from their published inputs, the FLOP count,
the catalogue, and bad input (serving plans: test_infer.py)."""

import json
import subprocess
import sys

import pytest

from wattlm.energy.facility import Facility, resolve_carbon
from wattlm.errors import InvalidInputError
from wattlm.plan import InferRequest, TrainRequest, catalogue, lookup, plan_train, training_flops

WATTLM = [sys.executable, "-m", "wattlm"]


def facility(pue, g_per_kwh):
    return Facility(pue=pue, carbon=resolve_carbon(intensity_g_per_kwh=g_per_kwh))


# Published runs: (name, inputs as published, published MWh, published t CO2e).
# Patterson et al. 2021, "Carbon Emissions and Large Neural Network Training" (arXiv:2104.10350), Table 4:
# processors × days × measured average system power per processor, PUE and the grid's g CO2e/kWh.
# Luccioni et al. 2022, "Estimating the Carbon Footprint of BLOOM" (arXiv:2211.02001): 1,082,990 A100 GPU-hours at
# 400 W (TDP) = 433,196 kWh dynamic energy, 57 g CO2e/kWh (French grid) -> 24.69 t.
PUBLISHED = [
    ("GPT-3", dict(gpu_hours=10_000 * 14.8 * 24, power_w=330, facility=facility(1.10, 429)), 1_287, 552),
    ("T5", dict(gpu_hours=512 * 20 * 24, power_w=310, facility=facility(1.12, 545)), 85.7, 46.7),
    ("Meena", dict(gpu_hours=1024 * 30 * 24, power_w=289, facility=facility(1.09, 415)), 232, 96.4),
    ("BLOOM-176B", dict(gpu_hours=1_082_990, hardware="A100-80GB", facility=facility(1.0, 57)), 433.196, 24.69),
]


@pytest.mark.parametrize("name, inputs, mwh, tco2e", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_published_training_runs_are_reproduced_within_2_percent(name, inputs, mwh, tco2e):
    plan = plan_train(TrainRequest(**inputs))
    central = plan["scenarios"]["central"]
    assert abs(central["facility_energy_kwh"] / 1000 / mwh - 1) < 0.02
    assert abs(central["co2e_t"] / tco2e - 1) < 0.02


def test_gpt3_flops_from_6nd_match_the_published_count():
    # Brown et al. 2020 (GPT-3), Table D.1: 175B parameters, 300B tokens, 3.14e23 training FLOPs
    assert abs(training_flops(175e9, 300e9) / 3.14e23 - 1) < 0.02


def test_attention_aware_count_adds_12_l_d_t_per_token():
    assert (
        training_flops(1e9, 1e6, layers=24, d_model=2048, seq_len=4096) == 6 * 1e9 * 1e6 + 12 * 24 * 2048 * 4096 * 1e6
    )


def test_without_an_mfu_the_plan_is_a_range_and_hours_scale_with_one_over_mfu():
    plan = plan_train(TrainRequest(params=7e9, tokens=2e12, hardware="A100-80GB", devices=2048))
    s = plan["scenarios"]
    assert [s[k]["mfu"] for k in ("low_mfu", "central", "high_mfu")] == [0.3, 0.4, 0.5]
    assert s["low_mfu"]["device_hours"] * 0.3 == pytest.approx(s["high_mfu"]["device_hours"] * 0.5)
    # 6·N·D / (312 TFLOP/s · 0.4) in hours, 400 W each
    hours = 6 * 7e9 * 2e12 / (312e12 * 0.4) / 3600
    assert s["central"]["device_hours"] == pytest.approx(hours)
    assert s["central"]["wall_time_h"] == pytest.approx(hours / 2048)
    assert s["central"]["it_energy_kwh"] == pytest.approx(hours * 0.4)
    assert any("range over MFU" in a for a in plan["assumptions"])
    one = plan_train(TrainRequest(params=7e9, tokens=2e12, hardware="A100-80GB", devices=2048, mfu=0.4))
    assert list(one["scenarios"]) == ["central"]


def test_cooling_model_and_cost_come_from_the_facility():
    from wattlm.energy.facility import CoolingModel

    f = Facility(cooling=CoolingModel(20, 35, 0.5), price_per_kwh=0.1, carbon=resolve_carbon("FR"))
    central = plan_train(TrainRequest(gpu_hours=1000, power_w=500, facility=f))["scenarios"]["central"]
    cop = 0.5 * 293.15 / 15
    assert central["facility_energy_kwh"] == pytest.approx(500 * (1 + 1 / cop))
    assert central["cost"] == pytest.approx(central["facility_energy_kwh"] * 0.1)


# -- catalogue and bad input ------------------------------------------------------------------------


def test_every_catalogue_row_has_a_source_and_a_bandwidth():
    rows = catalogue()
    for name in (
        "V100-SXM2",
        "A100-40GB",
        "A100-80GB-PCIe",
        "H100-SXM",
        "H100-PCIe",
        "H200",
        "B200",
        "L4",
        "T4",
        "A10",
        "RTX-4090",
        "MI250X",
        "MI300X",
        "TPU-v3",
        "TPU-v4",
        "TPU-v5e",
        "TPU-v5p",
        "EPYC-9654",
        "Xeon-8480+",
    ):
        assert name in rows
    assert all(hw.source and hw.bandwidth_gb_s > 0 and hw.peak_tflops for hw in rows.values())
    assert lookup("h100 sxm5").name == "H100-SXM" and lookup("NVIDIA-L4").name == "L4"


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: TrainRequest(params=0, tokens=1e9, hardware="H100", devices=8), "params must be positive"),
        (lambda: TrainRequest(params=1e9, tokens=-1, hardware="H100", devices=8), "tokens must be positive"),
        (lambda: TrainRequest(params=1e9, tokens=1e9, hardware="H100", devices=8, mfu=1.5), "(0, 1]"),
        (lambda: TrainRequest(params=1e9, tokens=1e9, hardware="H100", devices=8, mfu=0), "(0, 1]"),
        (lambda: TrainRequest(params=1e9, tokens=1e9), "give hardware, devices"),
        (lambda: TrainRequest(gpu_hours=10), "needs the power per device: power_w"),
        (
            lambda: TrainRequest(params=1e9, tokens=1e9, hardware="H100", devices=8, layers=2),
            "layers, d_model and seq_len",
        ),
        (
            lambda: plan_train(
                TrainRequest(
                    params=1e9, tokens=1e9, hardware="H100", devices=8, precision="bf16", facility=Facility(pue=0.9)
                )
            ),
            "PUE",
        ),
        (
            lambda: plan_train(TrainRequest(params=1e9, tokens=1e9, hardware="Z9000", devices=8)),
            "unknown hardware 'Z9000'",
        ),
        (
            lambda: plan_train(TrainRequest(params=1e9, tokens=1e9, hardware="V100", devices=8)),
            "no published bf16 peak",
        ),
        (
            lambda: plan_train(TrainRequest(params=1e9, tokens=1e9, hardware="TPU-v4", devices=8)),
            "give the average power",
        ),
        (lambda: InferRequest(params=1e9, hardware="H100", tokens=1e6, mbu=2), "(0, 1]"),
        (
            lambda: TrainRequest(params=7e9, tokens=1e12, hardware="A101"),
            "unknown hardware 'A101'; closest: A10, A100-40GB",
        ),
    ],
)
def test_bad_plan_input_is_refused_with_what_to_do(make, words):
    with pytest.raises(InvalidInputError) as info:
        make()
    assert words in str(info.value)


def test_plan_cli_json_and_one_line_errors():
    r = subprocess.run(
        [
            *WATTLM,
            "plan",
            "train",
            "--params",
            "7e9",
            "--tokens",
            "2e12",
            "--hardware",
            "A100-80GB",
            "--devices",
            "2048",
            "--mfu",
            "0.4",
            "--region",
            "US",
            "--price-per-kwh",
            "0.1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["carbon"]["region"] == "US" and plan["scenarios"]["central"]["cost"] > 0
    r = subprocess.run(
        [*WATTLM, "plan", "infer", "--params", "8e9", "--hardware", "H100-SXM", "--tokens", "1e9", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and set(json.loads(r.stdout)["scenarios"]) == {"low_energy", "central", "high_energy"}
    for args, words in (
        (
            ["train", "--params", "7e9", "--tokens", "2e12", "--hardware", "A100-80G", "--devices", "8"],
            "closest: A100-80GB",
        ),
        (
            ["train", "--params", "7e9", "--tokens", "2e12", "--hardware", "A100", "--devices", "8", "--pue", "0.8"],
            "PUE must be ≥ 1.0",
        ),
        (
            ["train", "--params", "7e9", "--tokens", "2e12", "--hardware", "A100", "--devices", "8", "--region", "XX"],
            "unknown region 'XX'",
        ),
        (["infer", "--params", "-8e9", "--hardware", "H100", "--tokens", "1e9"], "params must be positive"),
        (["train", "--params", "7e9", "--tokens", "1e12", "--hardware", "A101"], "unknown hardware 'A101'"),
        (["infer", "--params", "8e9", "--hardware", "H1000"], "unknown hardware 'H1000'; closest: H100"),
    ):
        r = subprocess.run([*WATTLM, "plan", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
