"""One CSV row per measurement with CodeCarbon's column names, so dashboards built on CodeCarbon's
emissions.csv read wattlm's too. CodeCarbon's columns come first, in its order and units (kWh, kg,
W, GB); two wattlm columns follow: provenance and status."""

from __future__ import annotations

import csv
import io
import os
import platform
import socket
from pathlib import Path

import psutil

from .. import __version__
from ..errors import InvalidInputError
from ..fileio import append_lines
from ..units import j_to_kwh
from .measurement import Measurement

COLUMNS = (
    "timestamp project_name run_id experiment_id duration emissions emissions_rate cpu_power gpu_power "
    "ram_power cpu_energy gpu_energy ram_energy energy_consumed water_consumed country_name "
    "country_iso_code region cloud_provider cloud_region os python_version codecarbon_version cpu_count "
    "cpu_model gpu_count gpu_model longitude latitude ram_total_size tracking_mode cpu_utilization_percent "
    "gpu_utilization_percent ram_utilization_percent ram_used_gb on_cloud pue wue "
    "wattlm_provenance wattlm_status"
).split()


def _row(m: Measurement, project_name: str) -> dict[str, object]:
    d = m.duration_s or float("nan")

    def power(energy_j: float | None) -> float:
        return 0.0 if energy_j is None else energy_j / d

    def kwh(energy_j: float | None) -> float:
        return 0.0 if energy_j is None else j_to_kwh(energy_j)

    gpus = [x for x in m.devices if x.domain == "gpu"]
    cpus = [x for x in m.devices if x.domain == "cpu"]
    carbon = m.facility.carbon
    return {
        "timestamp": m.end_time,
        "project_name": project_name,
        "run_id": f"{socket.gethostname()}-{os.getpid()}",
        "experiment_id": m.name,
        "duration": m.duration_s,
        "emissions": m.co2e_g / 1000.0,
        "emissions_rate": m.co2e_g / 1000.0 / d,
        "cpu_power": power(m.cpu_energy_j),
        "gpu_power": power(m.gpu_energy_j),
        "ram_power": power(m.dram_energy_j),
        "cpu_energy": kwh(m.cpu_energy_j),
        "gpu_energy": kwh(m.gpu_energy_j),
        "ram_energy": kwh(m.dram_energy_j),
        "energy_consumed": j_to_kwh(m.facility_energy_j),
        "water_consumed": 0.0,
        "country_name": carbon.region,
        "country_iso_code": carbon.region,
        "region": "",
        "cloud_provider": "",
        "cloud_region": "",
        "os": platform.platform(),
        "python_version": platform.python_version(),
        "codecarbon_version": f"wattlm-{__version__}",
        "cpu_count": os.cpu_count(),
        "cpu_model": "; ".join(x.label for x in cpus),
        "gpu_count": len(gpus),
        "gpu_model": "; ".join(x.label for x in gpus),
        "longitude": "",
        "latitude": "",
        "ram_total_size": psutil.virtual_memory().total / 1e9,
        "tracking_mode": "machine",
        "cpu_utilization_percent": "",
        "gpu_utilization_percent": "",
        "ram_utilization_percent": "",
        "ram_used_gb": "",
        "on_cloud": "N",
        "pue": m.facility.pue,
        "wue": 0.0,
        "wattlm_provenance": m.provenance,
        "wattlm_status": m.status,
    }


def check_csv(path: str | Path) -> None:
    """Refuse, before measuring, a CSV whose header is not ours: appending would corrupt it."""
    p = Path(path)
    if p.exists() and p.stat().st_size > 0:
        with open(p, encoding="utf-8", errors="replace") as f:
            header = f.readline().strip().split(",")
        if header != list(COLUMNS):
            raise InvalidInputError(
                f"{p} has other columns than wattlm's CodeCarbon-compatible ones: use a new file for --csv"
            )


def append_csv(path: str | Path, m: Measurement, project_name: str = "wattlm") -> None:
    p = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    if not p.exists() or p.stat().st_size == 0:
        writer.writeheader()
    writer.writerow(_row(m, project_name))
    append_lines(p, buf.getvalue().splitlines())
