"""Time per round of the simulator against a bare PyTorch loop doing the same local steps, and
the simulator's memory as the number of clients grows.

Times are CPU time of this process (``time.process_time``, one thread), which other work on a
shared machine inflates less than wall time; each figure is the median over rounds, and the
kinds being compared alternate within one run so drift favours none of them.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fedlib.core import Simulation, build_model, weighted_average
from fedlib.core.batches import iterate_batches
from fedlib.data import ArrayDataset, FederatedDataset
from fedlib.methods import FedAvg, get_method
from fedlib.models import SmallCNN


class _Timed(Simulation):
    """The simulator without evaluation, recording each round's CPU time."""

    def _play_round(self, round_: int):
        tic = time.process_time()
        record = super()._play_round(round_)
        record["cpu_seconds"] = time.process_time() - tic
        return record

    def _evaluate(self, record, client_rows) -> None:
        pass


def small_federation(
    num_clients: int, per_client: int = 20, *, image_size: int = 32, num_classes: int = 8,
    test_per_client: int = 2, seed: int = 0,
) -> FederatedDataset:
    """``num_clients`` clients of ``per_client`` random RGB images (the content does not matter
    for time or memory)."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> ArrayDataset:
        return ArrayDataset(
            torch.rand(n, 3, image_size, image_size, generator=g),
            torch.randint(0, num_classes, (n,), generator=g),
        )

    train = {k: split(per_client) for k in range(num_clients)}
    test = {k: split(test_per_client) for k in range(num_clients)}
    return FederatedDataset(
        "small", train, test, class_names=tuple(f"c{c}" for c in range(num_classes))
    )


def data_bytes(dataset: FederatedDataset) -> int:
    """Bytes of every image and label tensor of the federation."""
    return sum(
        d.images.numel() * d.images.element_size() + d.labels.numel() * d.labels.element_size()
        for split in (dataset.train, dataset.test)
        for d in split.values()
    )


def bare_round(
    model: nn.Module, dataset: FederatedDataset, global_state: dict, method: FedAvg, seed: int
) -> dict:
    """One FedAvg round written directly: load, SGD over shuffled batches, average."""
    states, sizes = [], []
    for k in dataset.client_ids():
        model.load_state_dict(global_state)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=method.lr, momentum=method.momentum)
        gen = torch.Generator().manual_seed(seed + k)
        for x, y in iterate_batches(
            dataset.train[k], method.batch_size, shuffle=True, generator=gen
        ):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        states.append(
            {n: v.detach().clone() for n, v in model.state_dict().items() if v.is_floating_point()}
        )
        sizes.append(len(dataset.train[k]))
    new = dict(global_state)
    new.update(weighted_average(states, sizes))
    return new


class _Runner:
    """One kind of round ("bare", "sequential", "vectorized") that can be played one at a
    time, so that the kinds alternate round by round."""

    def __init__(self, kind: str, dataset, model_fn, method, seed: int):
        self.kind, self.dataset, self.method = kind, dataset, method
        if kind == "bare":
            self.model = build_model(model_fn, seed)
            self.state = {k: v.clone() for k, v in self.model.state_dict().items()}
            self.round = 0
        else:
            self.sim = _Timed(method, model_fn, dataset, num_rounds=10**6, eval_every=None,
                              progress=False, seed=seed, vectorize=kind == "vectorized")

    def play(self) -> float:
        """CPU seconds of the next round."""
        if self.kind != "bare":
            return self.sim._play_round(self.sim.state_.round)["cpu_seconds"]
        tic = time.process_time()
        self.state = bare_round(self.model, self.dataset, self.state, self.method,
                                seed=1000 * self.round)
        self.round += 1
        return time.process_time() - tic


def compare(
    dataset: FederatedDataset,
    model_fn: Callable[[], nn.Module],
    *,
    kinds: tuple[str, ...] = ("bare", "sequential"),
    method: FedAvg | None = None,
    rounds: int = 5,
    repeats: int = 2,
) -> dict[str, float]:
    """Median CPU seconds per round of each kind ("bare", "sequential", "vectorized"), the
    kinds alternating round by round (after one warm-up round each), ``repeats`` runs of
    ``rounds`` rounds; also ``<kind>_ratio``, its median over the bare loop's."""
    torch.set_num_threads(1)
    method = method or FedAvg(lr=0.05)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for rep in range(repeats):
        runners = {kind: _Runner(kind, dataset, model_fn, method, seed=rep) for kind in kinds}
        for runner in runners.values():
            runner.play()  # warm-up
        for r in range(rounds):
            order = kinds if (rep + r) % 2 == 0 else kinds[::-1]
            for kind in order:
                times[kind].append(runners[kind].play())
    out = {kind: statistics.median(t) for kind, t in times.items()}
    if "bare" in out:
        for kind in kinds:
            out[f"{kind}_ratio"] = out[kind] / out["bare"]
    return out


# ---------------------------------------------------------------------------- memory
def peak_rss() -> int:
    """This process's peak resident memory in bytes: ``VmHWM`` of ``/proc/self/status`` (the
    peak of this program; ``ru_maxrss`` would also count the parent's before ``exec``), else
    ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(
    method_name: str, num_clients: int, rounds: int, image_size: int, disk: bool = False
) -> dict:
    """Run ``rounds`` rounds (no evaluation) in this process, the clients' states in memory or
    on disk; its peak RSS, the data's bytes, the bytes of the tensors in the clients' states,
    and the last round's CPU time."""
    torch.set_num_threads(1)
    dataset = small_federation(num_clients, image_size=image_size)
    method = get_method(method_name, lr=0.05, batch_size=20)
    with tempfile.TemporaryDirectory() as folder:
        sim = _Timed(method, lambda: SmallCNN(3, 8, width=8), dataset, num_rounds=rounds,
                     eval_every=None, progress=False, client_state_dir=folder if disk else None)
        sim.run()
        peak = peak_rss()
        state_bytes = 0
        for state in sim.client_states_.values():
            for part in (state.personal, state.post_local or {}, state.method):
                for value in part.values():
                    tensors = value.values() if isinstance(value, dict) else [value]
                    state_bytes += sum(
                        t.numel() * t.element_size() for t in tensors
                        if isinstance(t, torch.Tensor)
                    )
    return {
        "method": method_name,
        "clients": num_clients,
        "peak_bytes": peak,
        "data_bytes": data_bytes(dataset),
        "state_bytes": state_bytes,
        "round_cpu_s": sim.history_.round_records[-1]["cpu_seconds"],
    }


def memory(
    method_name: str, num_clients: int, *, rounds: int = 2, image_size: int = 16,
    disk: bool = False,
) -> dict:
    """:func:`memory_child` in a fresh Python process (peak RSS is per process)."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from simulator import memory_child;"
        "print(json.dumps(memory_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),"
        " int(sys.argv[5]), sys.argv[6] == 'disk')))"
    )
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run(
        [sys.executable, "-c", code, here, method_name, str(num_clients), str(rounds),
         str(image_size), "disk" if disk else "memory"],
        check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
