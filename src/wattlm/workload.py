"""A small fixed CPU-bound workload to try `wattlm measure` on any machine:

    wattlm measure -- python -m wattlm.workload --n 30000000

It sums squares in pure Python (one core busy, no sleeping), and prints what it did so the work can
be checked. It is a demonstration, not a benchmark.
"""

from __future__ import annotations

import argparse
import time


def run(n: int) -> int:
    return sum(i * i for i in range(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000_000, help="number of squares to sum")
    args = parser.parse_args()
    start = time.perf_counter()
    total = run(args.n)
    print(f"summed {args.n:,} squares (checksum {total % 1_000_003}) in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
