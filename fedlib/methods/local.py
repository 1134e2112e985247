"""Local-only training: each client trains alone, nothing crosses the wire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from fedlib.methods.fedavg import FedAvg


@dataclass(kw_only=True)
class LocalOnly(FedAvg):
    """The no-collaboration reference: every client keeps and trains its own model.

    No key is shared, so every tensor is personal state; the global model stays at its
    initial weights and only the clients' own models are meaningful (specialization).
    """

    name: ClassVar[str] = "local"
    personalized: ClassVar[bool] = True
    spec_model: str = "personal"

    def shared_keys(self, model: nn.Module) -> list[str]:
        return []
