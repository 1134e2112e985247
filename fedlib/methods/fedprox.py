"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, MLSys 2020, arXiv:1812.06127)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedlib._validation import Interval
from fedlib.core.algorithm import LocalContext
from fedlib.methods.fedavg import FedAvg


def proximal_term(model: nn.Module, anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    r"""``||w - w^t||^2`` summed over the trainable parameters that have an anchor value.

    Buffers (BatchNorm statistics) are not parameters and are not pulled.
    """
    terms = [
        (p - anchor[name]).pow(2).sum()
        for name, p in model.named_parameters()
        if p.requires_grad and name in anchor
    ]
    if not terms:
        return torch.zeros((), device=next(model.parameters()).device)
    return torch.stack(terms).sum()


@dataclass(kw_only=True)
class FedProx(FedAvg):
    r"""FedAvg with a proximal term that keeps local weights near the received ones.

    Local objective of client k in round t:

    .. math:: F_k(w) + \frac{\mu}{2} \lVert w - w^t \rVert^2

    so each step adds ``mu * (w - w^t)`` to the gradient. ``w^t`` is the model received this
    round; the server is FedAvg's. ``mu = 0`` is FedAvg exactly.

    Parameters
    ----------
    mu : float, default 0.01
        Proximal weight (the paper chooses from {0.001, 0.01, 0.1, 1}).
    """

    name: ClassVar[str] = "fedprox"
    mu: float = 0.01

    _constraints: ClassVar[dict] = {"mu": Interval(float, 0, None, closed="left")}

    def local_loss(self, model: nn.Module, batch, ctx: LocalContext) -> torch.Tensor:
        loss = super().local_loss(model, batch, ctx)
        if self.mu == 0:
            return loss
        return loss + 0.5 * self.mu * proximal_term(model, ctx.global_params)
