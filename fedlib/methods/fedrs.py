"""FedRS: restricted softmax (Li & Zhan, KDD 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedlib._validation import Interval, Options
from fedlib.core.algorithm import LocalContext
from fedlib.losses import fedrs_scale
from fedlib.methods.fedavg import FedAvg


@dataclass(kw_only=True)
class FedRS(FedAvg):
    r"""FedAvg whose local logits of classes the client lacks are scaled down.

    With a **bias-free** linear classifier (rows :math:`w_c`) on features :math:`h`, client k
    trains on

    .. math:: z_c = s_{k,c}\, w_c^\top h, \qquad L = \mathrm{CE}(z, y),

    ``"hard"`` (paper): :math:`s_{k,c} = 1` if :math:`n_{k,c} > 0` else :math:`\alpha`;
    ``"soft"`` (FedRepo code): :math:`s_{k,c} = \alpha + (1-\alpha)\, n_{k,c} / \max_j n_{k,j}`.
    A smaller :math:`\alpha` pushes the rows of absent classes less. Prediction uses the raw
    :math:`z_c = w_c^\top h`. Everything is shared; the server is FedAvg's.

    Symbols: :math:`n_{k,c}` = ``ctx.class_counts``; :math:`s_k` = :func:`fedlib.losses.
    fedrs_scale`; the ``loss`` option (CE by default) is applied to the scaled logits.

    The model's head loses its bias (:meth:`prepare_model`), so ``model(x)`` is exactly
    :math:`W h`. FedRepo also clips gradient norms: set ``max_grad_norm``.

    Parameters
    ----------
    alpha : float in [0, 1], default 0.5
        Scale of absent classes (FedRepo sweeps {0.9, 0.5, 0.1}).
    fedrs_mode : {"hard", "soft"}, default "hard"

    References
    ----------
    Li & Zhan, "FedRS: Federated Learning with Restricted Softmax for Label Distribution
    Non-IID Data", KDD 2021; code github.com/lxcnju/FedRepo (``algorithms/fedrs.py``).
    """

    name: ClassVar[str] = "fedrs"
    alpha: float = 0.5
    fedrs_mode: str = "hard"

    _constraints: ClassVar[dict] = {
        "alpha": Interval(float, 0, 1, closed="both"),
        "fedrs_mode": Options(("hard", "soft")),
    }

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Drop the classifier's bias: FedRS's classifier is ``z = W h``."""
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Linear):
            raise TypeError(
                f"FedRS: the model must have a linear 'head', got {type(head).__name__}."
            )
        head.register_parameter("bias", None)
        return model

    def before_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        ctx.extras["fedrs_scale"] = fedrs_scale(ctx.class_counts, self.alpha, self.fedrs_mode).to(
            ctx.device
        )

    def restricted_logits(self, model: nn.Module, x: torch.Tensor, ctx: LocalContext):
        """Training logits ``s_k ⊙ (W h)``, shape (B, C)."""
        return model(x) * ctx.extras["fedrs_scale"]

    def local_loss(self, model: nn.Module, batch, ctx: LocalContext) -> torch.Tensor:
        x, y = batch[0], batch[1]
        return self.classification_loss(self.restricted_logits(model, x, ctx), y, ctx)
