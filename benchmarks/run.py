"""Print the project's speed figures (targets in brackets) and record them. Run with ``make bench``.

- SynthDerm generation: 10,000 images at 32x32 on one thread [<= 5 s].
- SynthICH and SynthBUS generation at 64x64 on one thread [>= 2,000 images/s].
- Simulator time per round against a bare PyTorch loop doing the same local steps: 6 clients of
  ~310 images [<= 1.05x]; 100 and 1,000 clients of 20 images, sequential [<= 1.05x] and
  vectorized [100 clients: >= 3x faster than the bare loop].
- Scale: time per round and peak memory against the number of clients (one process per
  measurement) for FedAvg and the methods with per-client state (Ditto, FedRep, FCA, FedNPR),
  and Ditto with its clients' states on disk [FedAvg at 5,000 clients <= 1.2x the 100-client
  peak plus the data]. The default sizes keep ``make bench`` near 10 minutes on a quiet 2-core
  machine; ``--full`` adds 10,000 clients for every method and for the states on disk.
- Per-call time of each ``make_loss`` loss against a bare cross-entropy (printed, no target).

Every figure printed also goes into a JSON record (``--out``, default
``benchmarks/results.json``; :mod:`record`), section by section with the machine, the date and
the load average at start and end of each; sections not run this time are kept, so that
``make bench-flower`` and ``benchmarks/chapters.py`` add theirs to the same file.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import record  # noqa: E402

SECTIONS = ("generators", "simulator", "scale", "losses")
SCALE_METHODS = ("fedavg", "ditto", "fedrep", "fca", "fednpr")
MIB = 2**20


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


def bench_generators(n: int) -> dict[str, Any]:
    """Images per second of each generator on one thread (fastest of 3 runs, wall time)."""
    from fedlib.data.synthbus import render_synthbus
    from fedlib.data.synthderm import render_synthderm
    from fedlib.data.synthich import render_synthich

    rows, targets = [], []

    def row(name: str, size: int, images: int, seconds: float, rate: float) -> None:
        rows.append({"generator": name, "image_size": size, "images": images,
                     "seconds": seconds, "images_per_s": rate})

    seconds, rate = _rate(render_synthderm, n, 8, 6, image_size=32)
    row("SynthDerm", 32, n, seconds, rate)
    print(
        f"SynthDerm 32x32: {n} images in {seconds:.2f} s ({rate:,.0f} images/s) "
        f"[target: 10,000 in <= 5 s]"
    )
    targets.append(record.target("SynthDerm 32x32: seconds for 10,000 images",
                                 10_000 / rate, "<=", 5.0, "s"))
    seconds, rate = _rate(render_synthderm, n // 2, 8, 6, image_size=64)
    row("SynthDerm", 64, n // 2, seconds, rate)
    print(f"SynthDerm 64x64: {rate:,.0f} images/s")
    seconds, rate = _rate(render_synthich, n // 2, 5, 10, image_size=64)
    row("SynthICH", 64, n // 2, seconds, rate)
    print(f"SynthICH 64x64: {rate:,.0f} images/s [target: >= 2,000]")
    targets.append(record.target("SynthICH 64x64: images/s", rate, ">=", 2000.0, "images/s"))
    seconds, rate = _rate(render_synthbus, n // 2, 2, 3, image_size=64)
    row("SynthBUS", 64, n // 2, seconds, rate)
    print(f"SynthBUS 64x64: {rate:,.0f} images/s [target: >= 2,000]")
    targets.append(record.target("SynthBUS 64x64: images/s", rate, ">=", 2000.0, "images/s"))
    return {"timing": "wall seconds, fastest of 3 runs, one thread", "rows": rows,
            "targets": targets}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"


def _times(result: dict, kinds: tuple[str, ...]) -> str:
    return "; ".join(
        f"{kind} {result[kind]:.3f} s (ratio {result[kind + '_ratio']:.3f})" for kind in kinds
    )


def bench_simulator(rounds: int, repeats: int) -> dict[str, Any]:
    """The large-client case: 6 SynthDerm sites of about 310 images."""
    from simulator import compare

    from fedlib.data.synthderm import synthderm
    from fedlib.models import SmallCNN

    data = synthderm(scale=0.1, image_size=32, seed=0)
    images = sum(len(d) for d in data.train.values())
    result = compare(
        data, lambda: SmallCNN(3, data.num_classes, width=8), rounds=rounds, repeats=repeats
    )
    print(
        f"Simulator, FedAvg on SynthDerm (scale 0.1, {images} "
        "train images, 6 sites, SmallCNN width 8, batch 32, 1 epoch), CPU s per round (median): "
        f"{_times(result, ('bare', 'sequential'))} [target: sequential <= 1.05]"
    )
    return {
        "setting": f"FedAvg on SynthDerm (scale 0.1, {images} train images, 6 sites, SmallCNN "
                   "width 8, batch 32, 1 epoch)",
        "clients": 6, "images": images, "rounds": rounds * repeats, **result,
        "targets": [record.target("Simulator / bare loop, 6 sites of ~310 images (sequential)",
                                  result["sequential_ratio"], "<=", 1.05, "x")],
    }


def bench_small_clients(num_clients: int, rounds: int, repeats: int) -> dict[str, Any]:
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
    targets = [record.target(f"Simulator / bare loop, {num_clients:,} clients of 20 images "
                             "(sequential)", result["sequential_ratio"], "<=", 1.05, "x")]
    if num_clients <= 100:
        target += ", vectorized <= 0.333 (3x faster)"
        targets.append(record.target(f"Simulator / bare loop, {num_clients:,} clients of 20 "
                                     "images (vectorized)", result["vectorized_ratio"], "<=",
                                     1 / 3, "x"))
    print(
        f"Simulator, FedAvg, {num_clients} clients of 20 images 32x32 (SmallCNN width 8, batch "
        f"20), CPU s per round (median of {rounds * repeats}): {_times(result, kinds)}; "
        f"vectorized is {1 / result['vectorized_ratio']:.2f}x faster than the bare loop "
        f"[target: {target}]"
    )
    return {"clients": num_clients, "images_per_client": 20, "rounds": rounds * repeats,
            **result, "targets": targets}


def bench_memory(
    clients: tuple[int, ...],
    methods: tuple[str, ...],
    *,
    disk: bool = False,
    reference: dict[int, dict] | None = None,
) -> dict[str, dict[int, dict]]:
    """Peak memory and time per round against the number of clients, one process each;
    returns each method's rows by number of clients. ``reference``: FedAvg's rows, to which a
    method's extra memory is compared with its extra client state."""
    from simulator import memory

    where = "on disk (client_state_dir)" if disk else "in memory"
    print(
        "Memory, 2 rounds of 20 images 16x16 per client (SmallCNN width 8, no evaluation, "
        f"client states {where}), one process per row; 'vs 100' = peak / (peak at 100 clients "
        "+ the extra data); 'over FedAvg' = (peak - FedAvg's peak) / (state tensor bytes - "
        "FedAvg's), same number of clients:"
    )
    out: dict[str, dict[int, dict]] = {}
    for method in methods:
        rows = {k: dict(memory(method, k, disk=disk), disk=disk) for k in clients}
        out[method] = rows
        base = rows.get(100)
        for k, row in rows.items():
            line = (
                f"  {method:<7} {k:>6} clients: {row['round_cpu_s']:8.3f} CPU s/round, peak "
                f"{row['peak_bytes'] / MIB:7.1f} MiB, data {row['data_bytes'] / MIB:7.1f} MiB, "
                f"client states {row['state_bytes'] / MIB:7.1f} MiB"
            )
            if base is not None and k > 100:
                extra = row["data_bytes"] - base["data_bytes"]
                row["vs_100"] = row["peak_bytes"] / (base["peak_bytes"] + extra)
                line += f"; vs 100: {row['vs_100']:.3f}"
            other = (reference or {}).get(k)
            if other is not None and row["state_bytes"] - other["state_bytes"] > MIB:
                grown = row["state_bytes"] - other["state_bytes"]
                row["over_fedavg"] = (row["peak_bytes"] - other["peak_bytes"]) / grown
                line += f"; over FedAvg {row['over_fedavg']:.2f}"
            print(line + (" [target: vs 100 <= 1.2]" if method == "fedavg" and k == 5000 else ""))
    return out


def bench_scale(
    clients: tuple[int, ...],
    fedavg_clients: tuple[int, ...],
    methods: tuple[str, ...],
    disk_clients: tuple[int, ...],
) -> dict[str, Any]:
    """Time per round and peak memory against the number of clients: FedAvg (at
    ``clients`` and ``fedavg_clients``), each method of ``methods`` with per-client state (at
    ``clients``), and Ditto with its states on disk (at ``disk_clients``)."""
    from simulator import memory

    defaults = {name: p.default for name, p in inspect.signature(memory).parameters.items()
                if p.default is not inspect.Parameter.empty}
    sizes = tuple(sorted(set(clients) | set(fedavg_clients)))
    fedavg = bench_memory(sizes, ("fedavg",))["fedavg"]
    series = {"fedavg": fedavg}
    others = tuple(m for m in methods if m != "fedavg")
    if others and clients:
        series.update(bench_memory(tuple(clients), others, reference=fedavg))
    disk: dict[int, dict] = {}
    if disk_clients:
        # states on disk: one file per client, written every round (slower)
        disk = bench_memory(tuple(disk_clients), ("ditto",), disk=True,
                            reference=fedavg)["ditto"]
    rows = [row for method_rows in (*series.values(), disk) for row in method_rows.values()]
    for row in rows:
        row["round_cpu_s_per_client"] = row["round_cpu_s"] / row["clients"]
    targets = []
    if 5000 in fedavg and "vs_100" in fedavg[5000]:
        targets.append(record.target("FedAvg peak memory at 5,000 clients / (peak at 100 + the "
                                     "extra data)", fedavg[5000]["vs_100"], "<=", 1.2, "x"))
    return {
        "setting": f"{defaults.get('rounds', 2)} rounds of 20 random images "
                   f"{defaults.get('image_size', 16)}x{defaults.get('image_size', 16)} per "
                   "client, SmallCNN width 8, batch 20, every client sampled, no evaluation, one "
                   "process per row (peak RSS of that process); time = CPU seconds of the last "
                   "round",
        "memory_defaults": defaults,
        "rows": rows,
        "targets": targets,
    }


def bench_loss_table(number: int = 2000, repeats: int = 7) -> dict[str, Any]:
    """:func:`losses.bench_losses`'s figures (printed as it prints them) for the record."""
    from losses import bench_losses

    rows = bench_losses(number, repeats)
    return {"setting": "CPU time per call on a (32, 8) batch, one thread", "rows": rows}


def _ints(values: list[int]) -> tuple[int, ...]:
    bad = [v for v in values if v < 1]
    if bad:
        raise SystemExit(f"run.py: numbers of clients must be >= 1, got {bad}.")
    return tuple(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images per generator run")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per repeat")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of the round timing")
    parser.add_argument("--small-clients", type=int, nargs="*", default=[100, 1000],
                        help="federation sizes of the many-small-clients timing "
                             "(above 100: 2 rounds per repeat)")
    parser.add_argument(
        "--scale-clients", type=int, nargs="*", default=[10, 100, 1000],
        help="federation sizes of the scale table for every method (default: %(default)s)",
    )
    parser.add_argument(
        "--fedavg-clients", type=int, nargs="*", default=[5000, 10_000],
        help="further sizes for FedAvg alone (default: %(default)s)",
    )
    parser.add_argument(
        "--disk-clients", type=int, nargs="*", default=[10, 100, 1000],
        help="sizes for Ditto with its clients' states on disk (default: %(default)s)",
    )
    parser.add_argument("--methods", nargs="*", default=list(SCALE_METHODS),
                        choices=SCALE_METHODS, help="methods of the scale table")
    parser.add_argument(
        "--full", action="store_true",
        help="add 10,000 clients for every method and for the states on disk (the longest "
             "series)",
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="run only these sections (the record keeps the others)")
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT,
                        help="JSON record to write into (default: benchmarks/results.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scale_clients = _ints(args.scale_clients)
    disk_clients = _ints(args.disk_clients)
    if args.full:
        scale_clients = tuple(sorted(set(scale_clients) | {10_000}))
        disk_clients = tuple(sorted(set(disk_clients) | {10_000}))
    bench = record.Run("python benchmarks/run.py " + " ".join(argv if argv is not None
                                                                else sys.argv[1:]))
    print(f"Machine: {_load()} (a shared machine: other work inflates the times)")
    sections: dict[str, Any] = {}

    def section(name: str, fn, *fn_args, **fn_kwargs) -> None:
        if name not in args.only:
            return
        run = record.Run(name)
        result = fn(*fn_args, **fn_kwargs)
        sections[name] = {"run": run.finish(), **result}
        record.merge(args.out, {name: sections[name]})  # a later failure keeps what was done

    section("generators", bench_generators, args.images)

    def simulator_section() -> dict[str, Any]:
        large = bench_simulator(args.rounds, args.repeats)
        small = [bench_small_clients(k, args.rounds if k <= 100 else 2, args.repeats)
                 for k in _ints(args.small_clients)]
        targets = large.pop("targets") + [t for s in small for t in s.pop("targets")]
        return {"timing": "CPU seconds of this process per round, median over rounds, kinds "
                          "alternating round by round", "large_clients": large,
                "small_clients": small, "targets": targets}

    section("simulator", simulator_section)
    if scale_clients or args.fedavg_clients or disk_clients:
        section("scale", bench_scale, scale_clients, _ints(args.fedavg_clients),
                tuple(args.methods), disk_clients)
    section("losses", bench_loss_table)
    print(f"Machine at the end: {_load()}")
    record.merge(args.out, {"bench": bench.finish(args={
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
        if k != "out"}, sections=sorted(sections))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
