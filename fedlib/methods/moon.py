"""MOON: model-contrastive federated learning (Li, He, Song, CVPR 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedlib._validation import Interval, Options
from fedlib.core.algorithm import LocalContext, clone_module
from fedlib.losses import moon_contrastive_loss
from fedlib.methods.fedavg import FedAvg
from fedlib.models.heads import ProjectionHeadModel


def _frozen_copy(model: nn.Module, weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
    copy = clone_module(model)
    if weights is not None:
        copy.load_state_dict(weights)
    copy.eval()
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy


@dataclass(kw_only=True)
class MOON(FedAvg):
    r"""FedAvg plus a model-contrastive term on projected features.

    The term pulls local representations toward the global model's and away from the
    client's previous local model's.

    With projections :math:`r` (model being trained), :math:`r_g` (received global model)
    and :math:`r_p` (this client's model after its previous round; the global model in its
    first round), both references frozen and in eval mode:

    .. math::

        \ell_{con} = -\log \frac{e^{\cos(r, r_g)/T}}{e^{\cos(r, r_g)/T} + e^{\cos(r, r_p)/T}},
        \qquad L = \mathrm{CE}(z, y) + \mu\, \ell_{con}.

    The model is wrapped in :class:`fedlib.models.ProjectionHeadModel` (a 2-layer MLP to
    ``out_dim``; keys ``projection.*``). Everything is shared; the server is FedAvg's. The
    previous model is kept in the client's state (``ClientState.method["previous_model"]``).

    Parameters
    ----------
    mu : float >= 0, default 1.0
        :math:`\mu` (5 for CIFAR-10 and 1 for CIFAR-100 in the paper; Flower's default 1).
    temperature : float > 0, default 0.5
    out_dim : int, default 256
    head_input : {"projection", "features"}, default "projection"
        The classifier reads the projection (MOON's code) or the features (the projection is
        then a side branch).

    References
    ----------
    Li, He, Song, "Model-Contrastive Federated Learning", CVPR 2021, arXiv:2103.16257;
    github.com/QinbinLi/MOON.
    """

    name: ClassVar[str] = "moon"
    client_state_fields: ClassVar[dict[str, str]] = {
        "previous_model": "the client's model after its previous round (every tensor, CPU)",
    }
    mu: float = 1.0
    temperature: float = 0.5
    out_dim: int = 256
    head_input: str = "projection"

    _constraints: ClassVar[dict] = {
        "mu": Interval(float, 0, None, closed="left"),
        "temperature": Interval(float, 0, None, closed="neither"),
        "out_dim": Interval(int, 1, None),
        "head_input": Options(("projection", "features")),
    }

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return ProjectionHeadModel(model, out_dim=self.out_dim, head_input=self.head_input)

    def before_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        ctx.extras["moon_global"] = _frozen_copy(model)
        ctx.extras["moon_previous"] = _frozen_copy(
            model, ctx.state.method.get("previous_model")
        )

    def after_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        ctx.state.method["previous_model"] = {
            k: v.detach().cpu().clone() for k, v in model.state_dict().items()
        }

    def contrastive_loss(self, model: nn.Module, x: torch.Tensor, h: torch.Tensor, ctx):
        """``l_con`` of the batch, given the trained model's features ``h = phi(x)``."""
        global_model, previous = ctx.extras["moon_global"], ctx.extras["moon_previous"]
        with torch.no_grad():
            r_global = global_model.project(global_model.features(x))
            r_prev = previous.project(previous.features(x))
        return moon_contrastive_loss(model.project(h), r_global, r_prev, self.temperature)

    def local_loss(self, model: nn.Module, batch, ctx: LocalContext) -> torch.Tensor:
        x, y = batch[0], batch[1]
        h = model.features(x)
        loss = self.classification_loss(model.classify(h), y, ctx)
        if self.mu == 0:
            return loss
        return loss + self.mu * self.contrastive_loss(model, x, h, ctx)
