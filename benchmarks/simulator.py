"""Time per round of the simulator against a bare PyTorch loop doing the same local steps."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from fedlib.core import Simulation, build_model, weighted_average
from fedlib.core.batches import iterate_batches
from fedlib.data import FederatedDataset
from fedlib.methods import FedAvg


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


def compare(dataset: FederatedDataset, model_fn, *, rounds: int = 6, repeats: int = 3) -> dict:
    """Seconds per round (fastest of all timed rounds): the simulator, without evaluation,
    and the bare loop; their ratio, and the ratio of the medians."""
    torch.set_num_threads(1)
    method = FedAvg(lr=0.05)
    sim_times, bare_times = [], []
    for rep in range(repeats):
        # alternate which runs first, so warm-up and machine drift do not favour one side
        for side in ("sim", "bare") if rep % 2 == 0 else ("bare", "sim"):
            if side == "sim":
                sim = Simulation(method, model_fn, dataset, num_rounds=rounds + 1,
                                 eval_every=None, progress=False, seed=rep)
                sim.run()
                # the last round also evaluates; time only the training rounds
                sim_times += list(sim.history_.rounds["seconds"].iloc[:-1])
            else:
                model = build_model(model_fn, rep)
                state = {k: v.clone() for k, v in model.state_dict().items()}
                for r in range(rounds):
                    tic = time.perf_counter()
                    state = bare_round(model, dataset, state, method, seed=1000 * r)
                    bare_times.append(time.perf_counter() - tic)
    # the fastest round is the least disturbed by other work on the machine; medians are
    # reported too, for the spread
    sim_t, bare_t = min(sim_times), min(bare_times)
    return {
        "simulator_s_per_round": sim_t,
        "bare_s_per_round": bare_t,
        "ratio": sim_t / bare_t,
        "median_ratio": statistics.median(sim_times) / statistics.median(bare_times),
    }
