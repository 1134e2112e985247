"""FCA: federated classifier anchoring (Wicaksana, Yan, Cheng, arXiv:2305.00738, 2023)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedlib._validation import InstanceOf, Interval, Options
from fedlib.core.algorithm import GLOBAL_COUNTS, LocalContext
from fedlib.core.protocol import ClientState, GlobalState
from fedlib.losses import consistency_loss
from fedlib.methods.fedper import FedPer
from fedlib.models.heads import TwoHeadClassifier

FEDERATED = ("head.weight", "head.bias")
PERSONAL = ("personal_head.weight", "personal_head.bias")


def _use_head(weights: dict[str, torch.Tensor], source: tuple[str, ...]) -> None:
    """Make the model's predicting head (``head.*``) hold the tensors under ``source``."""
    for target, key in zip(FEDERATED, source, strict=True):
        if key in weights:
            weights[target] = weights[key]


@dataclass(kw_only=True)
class FCA(FedPer):
    r"""A personalized classifier at each client anchors and debiases the federated one.

    The model has a shared body :math:`\phi`, a federated head (``head.*``, averaged) and a
    personalized head (``personal_head.*``, never sent back):
    :math:`z_{fed} = W_{fed} h + b_{fed}`, :math:`z_{per} = W_{per} h + b_{per}`,
    :math:`h = \phi(x)`. Client k minimises, per batch,

    .. math::

        L = \lambda_1 L_{BSM}(z_{fed}, y; \pi_{fed})
          + \lambda_2 L_{BSM}(z_{per}, y; \pi_k)
          + \lambda_c\, \mathrm{KL}\big(\mathrm{sg}[\mathrm{softmax}(z_{per})] \,\|\,
            \mathrm{softmax}(z_{fed})\big),

    with the client's local prior :math:`\pi_k` (``fca_fed_prior="global"``: the federation's
    prior for the federated head), the consistency in ``kl_mode`` form
    (:func:`fedlib.losses.consistency_loss`), and ``sg`` a stop-gradient (``fca_detach_anchor``):
    the consistency gradient reaches the federated head and the body, never the personalized
    head, which learns from its own term only. The classification loss is the ``loss`` option
    (balanced softmax by default, as in the FCA code; "ce" and "focal" too).

    Evaluation (the paper's two views): generalization uses the server model with the
    federated head (``fca_global_head="fed"``) or with the clients' personalized heads averaged
    (``"per_avg"``, the code's choice; in a deployment it needs the upload
    ``pfl_global_head="avg_local"``, which sends each personalized head in the side channel
    for evaluation only; off by default, so the personalized head never leaves its client);
    specialization uses each client's model with its personalized head
    (``fca_local_head="per"``) or its federated head (``"fed"``, the code's choice).
    :func:`fedlib.evaluation.head_grid` scores all four pairs (the simulator can average the
    personalized heads from the clients' states for that evaluation, upload or not).

    Parameters
    ----------
    fca_lambda_fed, fca_lambda_per, fca_lambda_cons : float >= 0, default 1, 3, 1
        :math:`\lambda_1, \lambda_2, \lambda_c` (the code's values).
    kl_mode : {"batchmean", "code"}, default "batchmean"
        The batch-mean KL (evident intent) or the released code's probability-input variant.
    fca_detach_anchor : bool, default True
    fca_fed_prior : {"local", "global"}, default "local"
        Prior of the federated head's balanced softmax (the code: local).
    fca_global_head : {"fed", "per_avg"}, default "fed"
    fca_local_head : {"per", "fed"}, default "per"

    References
    ----------
    Wicaksana, Yan, Cheng, "FCA: Taming Long-tailed Federated Medical Image Classification by
    Classifier Anchoring", arXiv:2305.00738, 2023; github.com/Jwicaksana/FCA (``c814070``).
    """

    name: ClassVar[str] = "fca"
    head_choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "fca_global_head": ("fed", "per_avg"),
        "fca_local_head": ("per", "fed"),
    }
    """The evaluation pairings :func:`fedlib.evaluation.head_grid` scores (defaults first)."""
    loss: str = "bsm"
    personal_prefixes: tuple[str, ...] = ("personal_head.",)
    pfl_global_head: str = "none"
    fca_lambda_fed: float = 1.0
    fca_lambda_per: float = 3.0
    fca_lambda_cons: float = 1.0
    kl_mode: str = "batchmean"
    fca_detach_anchor: bool = True
    fca_fed_prior: str = "local"
    fca_global_head: str = "fed"
    fca_local_head: str = "per"

    _constraints: ClassVar[dict] = {
        "fca_lambda_fed": Interval(float, 0, None, closed="left"),
        "fca_lambda_per": Interval(float, 0, None, closed="left"),
        "fca_lambda_cons": Interval(float, 0, None, closed="left"),
        "kl_mode": Options(("batchmean", "code")),
        "fca_detach_anchor": InstanceOf(bool),
        "fca_fed_prior": Options(("local", "global")),
        "fca_global_head": Options(("fed", "per_avg")),
        "fca_local_head": Options(("per", "fed")),
    }

    def _check_consistency(self) -> None:
        super()._check_consistency()
        if self.fca_global_head == "per_avg" and self.pfl_global_head != "avg_local":
            raise ValueError(
                "FCA: 'fca_global_head'='per_avg' needs the personalized heads uploaded, "
                f"'pfl_global_head'='avg_local'; got 'pfl_global_head'={self.pfl_global_head!r}."
            )

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return TwoHeadClassifier(model)

    def wants_class_counts(self) -> bool:
        return self.fca_fed_prior == "global" or super().wants_class_counts()

    # ------------------------------------------------------------------ client
    def before_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        super().before_local_training(model, ctx)
        prior = ctx.prior
        if self.fca_fed_prior == "global" and GLOBAL_COUNTS in ctx.message.side:
            counts = ctx.message.side[GLOBAL_COUNTS].to(torch.float32)
            prior = (counts / counts.sum().clamp_min(1)).to(ctx.device)
        ctx.extras["fca_fed_prior"] = prior

    def local_loss(self, model: nn.Module, batch, ctx: LocalContext) -> torch.Tensor:
        x, y = batch[0], batch[1]
        h = model.features(x)
        z_fed, z_per = model.classify(h), model.classify_personal(h)
        loss = self.fca_lambda_fed * self._loss_fn(z_fed, y, prior=ctx.extras["fca_fed_prior"])
        if self.fca_lambda_per:
            loss = loss + self.fca_lambda_per * self._loss_fn(z_per, y, prior=ctx.prior)
        if self.fca_lambda_cons:
            loss = loss + self.fca_lambda_cons * consistency_loss(
                z_fed, z_per, mode=self.kl_mode, detach_teacher=self.fca_detach_anchor
            )
        return loss

    # ------------------------------------------------------------------ evaluation
    def eval_weights(
        self, global_weights: Mapping[str, torch.Tensor], state: GlobalState
    ) -> dict[str, torch.Tensor]:
        """Server model with the federated head, or the averaged personalized heads."""
        weights = super().eval_weights(global_weights, state)
        if self.fca_global_head == "per_avg":
            _use_head(weights, PERSONAL)
        return weights

    def personal_weights(
        self, global_weights: Mapping[str, torch.Tensor], state: ClientState
    ) -> dict[str, torch.Tensor]:
        """Client model (global body) with its personalized head, or the federated head."""
        weights = super().personal_weights(global_weights, state)
        if self.fca_local_head == "per":
            _use_head(weights, PERSONAL)
        return weights
