"""A small CNN trained in fp32 and bf16 on scikit-learn's digits, with the energy of every epoch.

A conv-pool-conv-pool-conv-dense network (the classic MNIST example of mixed precision) in
PyTorch (padding 1, because the bundled digits are 8×8 pixels, not 28×28), on scikit-learn's
bundled digits (1,797 images, no download), Adam at 1e-3, batch 64, and bf16 through
torch.autocast (fp32 master weights). Each epoch is one wattlm meter window; the script prints, per
precision, test accuracy and J per epoch with the energy's provenance.

    pip install scikit-learn
    python examples/cnn_mixed_precision.py --epochs 10 [--json out.json] [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

import torch
from torch import nn


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8×8 → 4×4
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 4×4 → 2×2
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 2 * 2, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def load_digits_split(seed: int = 0) -> tuple[torch.Tensor, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install scikit-learn")
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values 0..16
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def run(precision: str, epochs: int, device: torch.device, meter, seed: int = 0) -> dict:
    x_train, y_train, x_test, y_test = (t.to(device) for t in load_digits_split(seed))
    torch.manual_seed(seed)
    model = build_model().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def cast():
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    per_epoch = []
    for epoch in range(epochs):
        meter.begin_window("epoch")
        model.train()
        order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed * 1000 + epoch)).to(device)
        total = 0.0
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            with cast():
                loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(idx)
        m = meter.end_window("epoch")
        per_epoch.append(
            {
                "epoch": epoch + 1,
                "loss": total / len(y_train),
                "energy_j": m.it_energy_j,
                "duration_s": m.duration_s,
                "provenance": m.provenance,
            }
        )
    model.eval()
    with torch.no_grad(), cast():
        accuracy = float((model(x_test).argmax(dim=1) == y_test).float().mean())
    energies = [e["energy_j"] for e in per_epoch]
    return {
        "precision": precision,
        "test_accuracy": accuracy,
        "j_per_epoch": sum(energies) / len(energies),
        "epochs": per_epoch,
        "provenance": per_epoch[-1]["provenance"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    from wattlm import EnergyMeter

    device = torch.device(args.device)
    results = []
    with EnergyMeter() as meter:
        for precision in ("fp32", "bf16"):
            results.append(run(precision, args.epochs, device, meter))
    for r in results:
        print(
            f"{r['precision']}: test accuracy {r['test_accuracy']:.2%}, {r['j_per_epoch']:.3g} J per epoch"
            f" ({r['provenance']})"
        )
    if results[0]["provenance"] == "estimated":
        print("energy is ESTIMATED from a model of power (no counter was readable here), not measured")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"device": str(device), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
