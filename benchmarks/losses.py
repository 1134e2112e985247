"""Per-call time of the registered classification losses against a bare cross-entropy.

Each loss is built once with :func:`fedlib.losses.make_loss` and called as a method calls it
(``loss_fn(logits, y, prior=local_prior)``, the prior a (C,) float tensor) on a (32, 8) batch on
one thread, forward only and forward plus backward. Times are CPU time of this process
(``time.process_time``), which other work on a shared machine inflates less than wall time. Run
alone with ``python benchmarks/losses.py`` or with the other figures through
``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from typing import Any

import torch
import torch.nn.functional as F

from fedlib.losses import make_loss

NAMES = ("ce", "focal", "bsm", "logit_adjust")


def _per_call_us(call, number: int, repeats: int) -> tuple[float, float]:
    """Fastest and median CPU time per call in microseconds over ``repeats`` runs of ``number``."""
    call()  # warm-up
    runs = timeit.repeat(call, number=number, repeat=repeats, timer=time.process_time)
    return min(runs) / number * 1e6, statistics.median(runs) / number * 1e6


def compare(
    batch: int = 32,
    num_classes: int = 8,
    *,
    backward: bool = False,
    number: int = 2000,
    repeats: int = 7,
) -> list[tuple[str, float, float, float]]:
    """Rows ``(name, fastest µs, median µs, fastest ratio to F.cross_entropy)``."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, num_classes, generator=generator).requires_grad_(backward)
    targets = torch.randint(0, num_classes, (batch,), generator=generator)
    counts = torch.arange(1, num_classes + 1, dtype=torch.float32)
    prior = counts / counts.sum()

    def timed(loss):
        def call():
            value = loss()
            if backward:
                value.backward()

        return _per_call_us(call, number, repeats)

    base, base_median = timed(lambda: F.cross_entropy(logits, targets))
    rows = [("F.cross_entropy", base, base_median, 1.0)]
    for name in NAMES:
        loss_fn = make_loss(name)
        fastest, median = timed(lambda f=loss_fn: f(logits, targets, prior=prior))
        rows.append((f'make_loss("{name}")', fastest, median, fastest / base))
    return rows


def bench_losses(number: int = 2000, repeats: int = 7) -> list[dict[str, Any]]:
    """Print the per-call times and their ratios to a bare cross-entropy; return them as rows
    (``loss``, ``mode``, ``fastest_us``, ``median_us``, ``ratio``)."""
    rows = []
    for backward in (False, True):
        mode = "forward + backward" if backward else "forward only"
        print(f"Losses, CPU time per call on a (32, 8) batch, {mode} (fastest / median):")
        for label, fastest, median, ratio in compare(
            backward=backward, number=number, repeats=repeats
        ):
            print(f"  {label:<26} {fastest:7.1f} us / {median:7.1f} us  ratio {ratio:.2f}")
            rows.append({"loss": label, "mode": mode, "fastest_us": fastest,
                         "median_us": median, "ratio": ratio})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per timed run")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per loss")
    args = parser.parse_args(argv)
    bench_losses(args.number, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
