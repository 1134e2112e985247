"""Print the project's speed figures (targets in brackets). Run with ``make bench``.

- SynthDerm generation: 10,000 images at 32x32 on one thread [<= 5 s].
- SynthICH and SynthBUS generation at 64x64 on one thread [>= 2,000 images/s].
- Simulator time per round against a bare PyTorch loop doing the same local steps: 6 clients of
  ~310 images [<= 1.05x]; 100 and 1,000 clients of 20 images, sequential [<= 1.05x] and
  vectorized [100 clients: >= 3x faster than the bare loop].
- Time per round and peak memory of FedAvg, Ditto and FedRep from 10 to 10,000 clients (one
  process per measurement) [FedAvg at 5,000 clients <= 1.2x the 100-client peak plus the data].
- Per-call time of each ``make_loss`` loss against a bare cross-entropy (printed, no target).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rate(render, n: int, num_classes: int, num_sites: int, **kwargs) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, n)
    sites = rng.integers(0, num_sites, n)
    render(labels[:64], sites[:64], **kwargs)  # warm-up
    best = float("inf")
    for _ in range(3):
        tic = time.perf_counter()
        render(labels, sites, **kwargs)
        best = min(best, time.perf_counter() - tic)
    return best, n / best


def bench_generators(n: int) -> None:
    from fedlib.data.synthbus import render_synthbus
    from fedlib.data.synthderm import render_synthderm
    from fedlib.data.synthich import render_synthich

    seconds, rate = _rate(render_synthderm, n, 8, 6, image_size=32)
    print(
        f"SynthDerm 32x32: {n} images in {seconds:.2f} s ({rate:,.0f} images/s) "
        f"[target: 10,000 in <= 5 s]"
    )
    seconds, rate = _rate(render_synthderm, n // 2, 8, 6, image_size=64)
    print(f"SynthDerm 64x64: {rate:,.0f} images/s")
    seconds, rate = _rate(render_synthich, n // 2, 5, 10, image_size=64)
    print(f"SynthICH 64x64: {rate:,.0f} images/s [target: >= 2,000]")
    seconds, rate = _rate(render_synthbus, n // 2, 2, 3, image_size=64)
    print(f"SynthBUS 64x64: {rate:,.0f} images/s [target: >= 2,000]")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"


def _times(result: dict, kinds: tuple[str, ...]) -> str:
    return "; ".join(
        f"{kind} {result[kind]:.3f} s (ratio {result[kind + '_ratio']:.3f})" for kind in kinds
    )


def bench_simulator(rounds: int, repeats: int) -> None:
    """The large-client case: 6 SynthDerm sites of about 310 images."""
    from simulator import compare

    from fedlib.data.synthderm import synthderm
    from fedlib.models import SmallCNN

    data = synthderm(scale=0.1, image_size=32, seed=0)
    result = compare(
        data, lambda: SmallCNN(3, data.num_classes, width=8), rounds=rounds, repeats=repeats
    )
    print(
        f"Simulator, FedAvg on SynthDerm (scale 0.1, {sum(len(d) for d in data.train.values())} "
        "train images, 6 sites, SmallCNN width 8, batch 32, 1 epoch), CPU s per round (median): "
        f"{_times(result, ('bare', 'sequential'))} [target: sequential <= 1.05]"
    )


def bench_small_clients(num_clients: int, rounds: int, repeats: int) -> None:
    """Many small clients: bare loop, fedlib sequential, fedlib vectorized."""
    from simulator import compare, small_federation

    from fedlib.methods import FedAvg
    from fedlib.models import SmallCNN

    data = small_federation(num_clients)
    kinds = ("bare", "sequential", "vectorized")
    result = compare(
        data, lambda: SmallCNN(3, 8, width=8), kinds=kinds, method=FedAvg(lr=0.05, batch_size=20),
        rounds=rounds, repeats=repeats,
    )
    target = "sequential <= 1.05"
    if num_clients <= 100:
        target += ", vectorized <= 0.333 (3x faster)"
    print(
        f"Simulator, FedAvg, {num_clients} clients of 20 images 32x32 (SmallCNN width 8, batch "
        f"20), CPU s per round (median of {rounds * repeats}): {_times(result, kinds)}; "
        f"vectorized is {1 / result['vectorized_ratio']:.2f}x faster than the bare loop "
        f"[target: {target}]"
    )


def bench_memory(
    clients: tuple[int, ...],
    methods: tuple[str, ...],
    *,
    disk: bool = False,
    reference: dict[int, dict] | None = None,
) -> dict[int, dict]:
    """Peak memory and time per round against the number of clients, one process each;
    returns the last method's rows. ``reference``: FedAvg's rows, to which a method's extra
    memory is compared with its extra client state."""
    from simulator import memory

    mib = 2**20
    where = "on disk (client_state_dir)" if disk else "in memory"
    print(
        "Memory, 2 rounds of 20 images 16x16 per client (SmallCNN width 8, no evaluation, "
        f"client states {where}), one process per row; 'vs 100' = peak / (peak at 100 clients "
        "+ the extra data); 'over FedAvg' = (peak - FedAvg's peak) / (state tensor bytes - "
        "FedAvg's), same number of clients:"
    )
    rows: dict[int, dict] = {}
    for method in methods:
        rows = {k: memory(method, k, disk=disk) for k in clients}
        base = rows.get(100)
        for k, row in rows.items():
            line = (
                f"  {method:<7} {k:>6} clients: {row['round_cpu_s']:8.3f} CPU s/round, peak "
                f"{row['peak_bytes'] / mib:7.1f} MiB, data {row['data_bytes'] / mib:7.1f} MiB, "
                f"client states {row['state_bytes'] / mib:7.1f} MiB"
            )
            if base is not None and k > 100:
                extra = row["data_bytes"] - base["data_bytes"]
                line += f"; vs 100: {row['peak_bytes'] / (base['peak_bytes'] + extra):.3f}"
            other = (reference or {}).get(k)
            if other is not None and row["state_bytes"] - other["state_bytes"] > mib:
                grown = row["state_bytes"] - other["state_bytes"]
                line += f"; over FedAvg {(row['peak_bytes'] - other['peak_bytes']) / grown:.2f}"
            print(line + (" [target: vs 100 <= 1.2]" if method == "fedavg" and k == 5000 else ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images per generator run")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per repeat")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of the round timing")
    parser.add_argument(
        "--memory-clients", type=int, nargs="*", default=[10, 100, 1000, 5000, 10_000],
        help="federation sizes of the memory table (FedAvg; Ditto and FedRep skip 5,000)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"Machine: {_load()} (a shared machine: other work inflates the times)")
    bench_generators(args.images)
    bench_simulator(args.rounds, args.repeats)
    bench_small_clients(100, args.rounds, args.repeats)
    bench_small_clients(1000, 2, args.repeats)
    if args.memory_clients:
        sizes = tuple(args.memory_clients)
        fedavg = bench_memory(sizes, ("fedavg",))
        others = tuple(k for k in sizes if k != 5000)
        bench_memory(others, ("ditto", "fedrep"), reference=fedavg)
        # states on disk: one file per client, written every round (slower; a smaller size)
        bench_memory(tuple(k for k in sizes if k <= 1000), ("ditto",), disk=True,
                     reference=fedavg)
    from losses import bench_losses

    bench_losses()
    print(f"Machine at the end: {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
