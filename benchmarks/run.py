"""Print the project's speed figures (targets in brackets). Run with ``make bench``.

- SynthDerm generation: 10,000 images at 32x32 on one thread [<= 5 s].
- SynthICH and SynthBUS generation at 64x64 on one thread [>= 2,000 images/s].
- Simulator time per round against a bare PyTorch loop doing the same local steps [<= 1.10x].
- Per-call time of each ``make_loss`` loss against a bare cross-entropy (printed, no target).
"""

from __future__ import annotations

import argparse
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


def bench_simulator(rounds: int, repeats: int) -> None:
    from simulator import compare

    from fedlib.data.synthderm import synthderm
    from fedlib.models import SmallCNN

    data = synthderm(scale=0.1, image_size=32, seed=0)
    result = compare(
        data, lambda: SmallCNN(3, data.num_classes, width=8), rounds=rounds, repeats=repeats
    )
    print(
        f"Simulator, FedAvg on SynthDerm (scale 0.1, {sum(len(d) for d in data.train.values())} "
        f"train images, 6 sites, SmallCNN width 8, batch 32, 1 epoch): "
        f"{result['simulator_s_per_round']:.3f} s/round vs bare loop "
        f"{result['bare_s_per_round']:.3f} s/round (fastest rounds), ratio {result['ratio']:.3f} "
        f"[target: <= 1.10]; ratio of medians {result['median_ratio']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images per generator run")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per repeat")
    parser.add_argument("--repeats", type=int, default=4, help="repeats of the round timing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    bench_generators(args.images)
    bench_simulator(args.rounds, args.repeats)
    from losses import bench_losses

    bench_losses()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
