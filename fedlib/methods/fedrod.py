"""FedRoD: a shared generic head and a local personal head (Chen & Chao, ICLR 2022)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fedlib.core.algorithm import LocalContext
from fedlib.core.protocol import ClientState
from fedlib.methods.fedavg import FedAvg
from fedlib.models.heads import TwoHeadClassifier

PERSONAL_PREFIX = "personal_head."


@dataclass(kw_only=True)
class FedRoD(FedAvg):
    r"""Shared body and generic head (balanced softmax), plus a local additive personal head.

    Body :math:`\phi` and generic head :math:`g` are shared; the personal head :math:`p` is
    local.

    Client k minimises, per batch,

    .. math::

        L = \underbrace{\mathrm{CE}(g(h) + \gamma \log \pi_k, y)}_{\text{generic, balanced
        softmax}} + \underbrace{\mathrm{CE}(\mathrm{sg}[g(h)] + p(\mathrm{sg}[h]), y)}_{
        \text{personal}}, \qquad h = \phi(x),

    where sg stops the gradient: the personal term trains only :math:`p`, the generic term
    only :math:`\phi` and :math:`g` (one optimizer over the sum equals FedRoD's two). The
    server averages :math:`\phi` and :math:`g` (FedAvg); :math:`p` never leaves the client.
    Predictions: generic (generalization) :math:`g(h)`; personalized (specialization)
    :math:`g(h) + p(h)`, i.e. one linear head with weights :math:`W_g + W_p` and bias
    :math:`b_g + b_p` (:meth:`personal_weights`).

    Symbols: :math:`\pi_k` local prior (``ctx.prior``); :math:`\gamma` = ``la_tau`` when
    ``loss="logit_adjust"``; the default ``loss="bsm"`` is :math:`\gamma = 1`. The model is
    wrapped in :class:`fedlib.models.TwoHeadClassifier` (keys ``personal_head.*``). The
    optional hypernetwork that generates :math:`p` from the label distribution is not
    implemented.

    References
    ----------
    Chen & Chao, "On Bridging Generic and Personalized Federated Learning for Image
    Classification", ICLR 2022, arXiv:2107.00778; github.com/hongyouc/Fed-RoD; PFLlib
    ``clientrod.py``.
    """

    name: ClassVar[str] = "fedrod"
    personalized: ClassVar[bool] = True
    spec_model: str = "personal"
    loss: str = "bsm"

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return TwoHeadClassifier(model)

    def shared_keys(self, model: nn.Module) -> list[str]:
        return [k for k in super().shared_keys(model) if not k.startswith(PERSONAL_PREFIX)]

    def personal_loss(
        self, model: TwoHeadClassifier, h: torch.Tensor, generic_logits: torch.Tensor, y
    ) -> torch.Tensor:
        """``CE(sg[g(h)] + p(sg[h]), y)``: reaches only the personal head."""
        return F.cross_entropy(
            generic_logits.detach() + model.classify_personal(h.detach()), y
        )

    def local_loss(self, model: nn.Module, batch, ctx: LocalContext) -> torch.Tensor:
        x, y = batch[0], batch[1]
        h = model.features(x)
        generic = model.classify(h)
        return self.classification_loss(generic, y, ctx) + self.personal_loss(
            model, h, generic, y
        )

    def personal_weights(
        self, global_weights: Mapping[str, torch.Tensor], state: ClientState
    ) -> dict[str, torch.Tensor]:
        """Global body, and one head ``g + p`` (weights and biases summed)."""
        merged = super().personal_weights(global_weights, state)
        for name in ("weight", "bias"):
            if f"head.{name}" in merged and f"{PERSONAL_PREFIX}{name}" in merged:
                merged[f"head.{name}"] = merged[f"head.{name}"] + merged[PERSONAL_PREFIX + name]
        return merged
