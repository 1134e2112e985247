"""fedlib's simulator against Flower's simulation engine (Ray) on the same task.

    make bench-flower        # builds .venv-flower (Flower 1.42 with Ray), then runs this

Task: ``--clients`` clients (default 100) of ``--images`` random 32x32 RGB images (default 20,
:func:`simulator.small_federation`), ``--rounds`` rounds (default 20) of FedAvg (lr 0.05,
batch 20, one local epoch) on a SmallCNN of width 8, every client in every round, no
evaluation, seed 0.

Both sides run the same fedlib algorithm (``FedAvg``), each run in a process of its own:

- **fedlib**: :class:`fedlib.core.Simulation`, one thread (sequential, and vectorized as a
  second figure);
- **Flower**: ``flwr.simulation.run_simulation`` with fedlib's Flower adapter: a ServerApp
  around :class:`fedlib.flower.FedlibStrategy` and the ClientApp of
  :func:`fedlib.flower.make_client_app`, each virtual SuperNode holding one client of the same
  federation. Ray runs the ClientApps in ``--actors`` actors of one CPU each (default: a run
  with 1, the single core fedlib uses, and one with 2, which fills a 2-core machine). Ray
  starts from nothing in each run, and each fedlib run pays its own first-call costs.

Figures (wall seconds, ``time.perf_counter``): the total; the start-up, from the call until
the first round starts (for Flower: Ray's start, the actors' start and the handshake that maps
Flower's node ids to fedlib's client ids, which overlap); the median round; and the end, from
the last round until the call returns. The ratios are Flower's total over fedlib's and its
median round over fedlib's. Both sides must end with the same global weights (reported as the
largest absolute difference).

Writes the section ``flower`` into the JSON record (``--out``, default
``benchmarks/results.json``), keeping the other sections.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

LR = 0.05
BATCH = 20
WIDTH = 8
NUM_CLASSES = 8
_SITES: dict[tuple, Any] = {}  # per process (each Ray actor): the federation, built once


def federation(num_clients: int, images: int):
    """The task's federation (the same in every process: seeded)."""
    from simulator import small_federation

    key = (num_clients, images)
    if key not in _SITES:
        _SITES[key] = small_federation(num_clients, per_client=images, image_size=32,
                                       num_classes=NUM_CLASSES)
    return _SITES[key]


def algorithm():
    from fedlib.methods import FedAvg

    return FedAvg(lr=LR, batch_size=BATCH)


def model_fn():
    from fedlib.models import SmallCNN

    return SmallCNN(3, NUM_CLASSES, width=WIDTH)


def _max_difference(a: dict, b: dict) -> float:
    import torch

    """The largest absolute difference between two state dicts' float tensors (inf when their
    keys differ)."""
    if set(a) != set(b):
        return float("inf")
    diffs = [float((a[k].double() - b[k].double()).abs().max()) for k in a
             if torch.is_floating_point(a[k])]
    return max(diffs, default=0.0)


# ---------------------------------------------------------------------------- fedlib
def run_fedlib(num_clients: int, images: int, rounds: int, *, vectorize: bool) -> dict[str, Any]:
    """The task on :class:`fedlib.core.Simulation` in this process."""
    import torch

    from fedlib.core import Simulation

    class NoEvaluation(Simulation):
        """The simulator without its evaluation after the last round (Flower's side has
        none)."""

        def _evaluate(self, record, client_rows) -> None:
            pass

    torch.set_num_threads(1)
    data = federation(num_clients, images)
    tic = time.perf_counter()
    cpu = time.process_time()
    sim = NoEvaluation(algorithm(), model_fn, data, num_rounds=rounds, eval_every=None,
                       progress=False, seed=0, vectorize=vectorize)
    sim.run()
    total = time.perf_counter() - tic
    seconds = [float(r["seconds"]) for r in sim.history_.round_records]
    weights = {k: v.detach().cpu().clone() for k, v in sim.global_model().state_dict().items()}
    return {
        "engine": "fedlib " + ("vectorized" if vectorize else "sequential"),
        "total_s": total,
        "cpu_s": time.process_time() - cpu,
        "startup_s": total - sum(seconds),
        "round_s": seconds,
        "median_round_s": statistics.median(seconds),
        "weights": weights,
    }


# ---------------------------------------------------------------------------- Flower
def node_setup(context):
    """A virtual SuperNode's client: the fedlib client half and the client's data, built once
    per Ray actor and shared by the messages it serves; the node's persistent state lives in
    its Flower context, as on a real node."""
    import torch

    from fedlib.flower import ClientSetup, FedlibClient, NodeStateStore, Site

    torch.set_num_threads(1)
    config = context.node_config
    p, k = int(config["partition-id"]), int(config["num-partitions"])
    images = int(os.environ["FEDLIB_BENCH_IMAGES"])
    key = ("client", p, k, images)
    if key not in _SITES:
        data = federation(k, images)
        _SITES[key] = (FedlibClient(algorithm(), model_fn, seed=0, device="cpu"),
                       Site(data.train[p], data.test[p], data.num_classes))
    client, site = _SITES[key]
    return ClientSetup(client, site, p, k, NodeStateStore(context, p))


def flower_child(num_clients: int, images: int, rounds: int, actors: int) -> dict[str, Any]:
    """One run of the task on Flower's simulation engine (call in a fresh process)."""
    import logging

    import flower_sim  # by name, so that Ray's actors import it rather than copy it
    import torch
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from fedlib.flower import FedlibStrategy, make_client_app

    torch.set_num_threads(1)
    os.environ["FEDLIB_BENCH_IMAGES"] = str(images)
    marks: dict[str, Any] = {"rounds": []}
    out: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid, context) -> None:
        def on_round(strategy, record) -> None:
            marks["rounds"].append(time.perf_counter())

        strategy = FedlibStrategy(algorithm(), model_fn, seed=0, on_round=on_round)
        strategy.identify(grid)
        marks["identified"] = time.perf_counter()
        strategy.start(grid, strategy.initial_arrays(), num_rounds=rounds, timeout=3600.0)
        out["weights"] = {k: v.detach().cpu().clone()
                          for k, v in strategy.global_weights().items()}
        out["rounds_played"] = strategy.state_.round

    client = make_client_app(flower_sim.node_setup)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    tic = time.perf_counter()
    cpu = time.process_time()
    run_simulation(
        server, client, num_supernodes=num_clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                        "init_args": {"num_cpus": actors, "include_dashboard": False,
                                      "log_to_driver": False}},
    )
    end = time.perf_counter()
    if "weights" not in out:
        raise RuntimeError("flower_sim: the ServerApp did not finish (see Flower's log above).")
    starts = [marks["identified"], *marks["rounds"][:-1]]
    seconds = [b - a for a, b in zip(starts, marks["rounds"], strict=True)]
    return {
        "engine": f"Flower {_flwr_version()} simulation (Ray {_ray_version()}), "
                  f"{actors} actor(s) of 1 CPU",
        "actors": actors,
        "total_s": end - tic,
        "driver_cpu_s": time.process_time() - cpu,
        "startup_s": marks["identified"] - tic,
        "round_s": seconds,
        "median_round_s": statistics.median(seconds),
        "end_s": end - marks["rounds"][-1],
        "rounds_played": out["rounds_played"],
        "weights": out["weights"],
    }


def _flwr_version() -> str:
    import flwr

    return flwr.__version__


def _ray_version() -> str:
    import ray

    return ray.__version__


def child(engine: str, num_clients: int, images: int, rounds: int, actors: int) -> dict:
    """One run of the task: ``engine`` "sequential" or "vectorized" (fedlib) or "flower"."""
    if engine == "flower":
        return flower_child(num_clients, images, rounds, actors)
    return run_fedlib(num_clients, images, rounds, vectorize=engine == "vectorized")


def run_child(engine: str, num_clients: int, images: int, rounds: int, actors: int = 1) -> dict:
    """:func:`child` in a fresh Python process (each engine pays its own first-call costs; Ray
    starts from nothing); the final weights come back in a file."""
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "weights.pt"
        code = (
            "import json, sys, torch; sys.path.insert(0, sys.argv[1]); import flower_sim;"
            "r = flower_sim.child(sys.argv[2], *map(int, sys.argv[3:7]));"
            "torch.save(r.pop('weights'), sys.argv[7]); print('RESULT ' + json.dumps(r))"
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0",
               "FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        proc = subprocess.run(
            [sys.executable, "-c", code, str(HERE), engine, str(num_clients), str(images),
             str(rounds), str(actors), str(weights)],
            capture_output=True, text=True, env=env, check=False,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit(f"flower_sim: the {engine} run failed (exit status "
                             f"{proc.returncode}); its output is above.")
        result = json.loads(lines[-1].removeprefix("RESULT "))
        result["weights"] = torch.load(weights)
    return result


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    import record
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="clients (virtual SuperNodes)")
    parser.add_argument("--images", type=int, default=20, help="training images per client")
    parser.add_argument("--rounds", type=int, default=20, help="FedAvg rounds")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2],
                        help="Ray actors (one CPU each) of each Flower run (default: 1 2)")
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT,
                        help="JSON record to write into (default: benchmarks/results.json)")
    args = parser.parse_args(argv)
    for name in ("clients", "images", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"flower_sim: --{name} must be >= 1, got {getattr(args, name)}.")
    if any(a < 1 for a in args.actors):
        raise SystemExit(f"flower_sim: --actors must be >= 1, got {args.actors}.")
    torch.set_num_threads(1)
    run = record.Run("python benchmarks/flower_sim.py " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    task = (f"FedAvg, {args.clients} clients of {args.images} random 32x32 images, "
            f"{args.rounds} rounds, SmallCNN width {WIDTH}, batch {BATCH}, lr {LR}, every "
            "client every round, no evaluation, seed 0")
    print(f"fedlib vs Flower: {task}")
    task_args = (args.clients, args.images, args.rounds)
    runs = [run_child("sequential", *task_args), run_child("vectorized", *task_args)]
    runs += [run_child("flower", *task_args, actors=a) for a in args.actors]
    base = runs[0]
    base_weights = base["weights"]
    for r in runs:
        r["max_weight_difference"] = _max_difference(r.pop("weights"), base_weights)
        r["total_ratio"] = r["total_s"] / base["total_s"]
        r["round_ratio"] = r["median_round_s"] / base["median_round_s"]
        print(f"  {r['engine']:<58} total {r['total_s']:7.2f} s (start-up {r['startup_s']:6.2f}"
              f" s, median round {r['median_round_s']:.3f} s); vs fedlib sequential: total "
              f"{r['total_ratio']:.2f}x, per round {r['round_ratio']:.2f}x; largest weight "
              f"difference {r['max_weight_difference']:.2e}")
    import flwr
    import ray

    record.merge(args.out, {"flower": {
        "run": run.finish(flwr=flwr.__version__, ray=ray.__version__),
        "setting": task,
        "adapter": "fedlib.flower: FedlibStrategy in a ServerApp, make_client_app's ClientApp "
                   "(the same FedAvg object on both sides)",
        "timing": "wall seconds (time.perf_counter); Flower's start-up = Ray's start, the "
                  "actors' start and the node-id handshake",
        "rows": runs,
    }})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
