"""FedAvg (McMahan et al., AISTATS 2017, arXiv:1602.05629): the core's defaults, unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedlib.core.algorithm import Algorithm


@dataclass(kw_only=True)
class FedAvg(Algorithm):
    """Federated averaging: local mini-batch training, then ``w = sum_k (n_k/n) w_k``.

    All options are those of :class:`fedlib.core.Algorithm` (optimizer, learning rate and
    schedule, batch size, local epochs or steps, optimizer state, local loss).
    """

    name: ClassVar[str] = "fedavg"
