"""A toy federation for the core and method tests: three clients of coloured blobs."""

from __future__ import annotations

import torch
from torch import nn

from fedlib.core import Simulation
from fedlib.data import ArrayDataset, FederatedDataset
from fedlib.models import SmallCNN


def blobs(num_clients: int = 3, per_client: int = 24, size: int = 8, seed: int = 0,
          absent: dict[int, int] | None = None) -> FederatedDataset:
    """Three-class colour blobs (class c brightens channel c, client k shifts all pixels);
    ``absent={k: c}`` removes class c from client k's train and test splits."""
    absent = absent or {}
    g = torch.Generator().manual_seed(seed)
    train, test = {}, {}
    for k in range(num_clients):
        allowed = torch.tensor([c for c in range(3) if c != absent.get(k)])
        for split, n in (("train", per_client), ("test", per_client // 2)):
            labels = allowed[torch.randint(0, len(allowed), (n,), generator=g)]
            images = 0.3 * torch.rand(n, 3, size, size, generator=g) + 0.05 * k
            images[torch.arange(n), labels] += 0.5
            (train if split == "train" else test)[k] = ArrayDataset(images.clamp(0, 1), labels)
    return FederatedDataset("blobs", train, test, class_names=("a", "b", "c"))


def tiny_cnn() -> nn.Module:
    return SmallCNN(3, 3, width=2)


def one_round(sim: Simulation, client: int = 0):
    """The message to ``client``, its reply and its new state (nothing is aggregated)."""
    message = sim.algorithm.message_for(sim.state_, client)
    reply, state = sim.algorithm.client_update(
        sim.model_, message, sim.client_states_[client], sim.dataset.train[client],
        client_id=client, num_classes=sim.dataset.num_classes,
        initial_weights=sim.initial_weights_, generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )
    return message, reply, state
