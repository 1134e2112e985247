"""FedRep: local heads, shared representation (Collins et al., ICML 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedlib._validation import Interval
from fedlib.core.algorithm import LocalContext, has_prefix
from fedlib.methods.fedper import FedPer


@dataclass(kw_only=True)
class FedRep(FedPer):
    r"""Each round: head epochs with the body frozen, then body epochs with the head frozen.

    Client k, starting from the global body :math:`\phi^t` and its own head :math:`h_k`:

    .. math::

        h_k \leftarrow \arg\min_h F_k(\phi^t, h) \ (\tau_h \text{ epochs}), \qquad
        \phi_k \leftarrow \arg\min_\phi F_k(\phi, h_k) \ (\tau_b \text{ epochs}),

    then the server averages the bodies :math:`\phi_k` (FedAvg); the head never leaves the
    client (keys under ``personal_prefixes``, as :class:`FedPer`). Frozen parameters get no
    gradient, so the optimizer does not move them. ``local_epochs``/``local_steps`` are not
    used: the schedule is ``head_epochs`` then ``body_epochs``.

    Parameters
    ----------
    head_epochs : int >= 0, default 1
        :math:`\tau_h` (the reference code uses about 10: ``max(10, local_ep - rep_ep)``).
    body_epochs : int >= 0, default 1
        :math:`\tau_b` (1 in the reference code). At least one of the two must be positive.

    References
    ----------
    Collins, Hassani, Mokhtari, Shakkottai, "Exploiting Shared Representations for
    Personalized Federated Learning", ICML 2021, arXiv:2102.07078;
    github.com/lgcollins/FedRep.
    """

    name: ClassVar[str] = "fedrep"
    head_epochs: int = 1
    body_epochs: int = 1

    _constraints: ClassVar[dict] = {
        "head_epochs": Interval(int, 0, None),
        "body_epochs": Interval(int, 0, None),
    }

    def _check_consistency(self) -> None:
        super()._check_consistency()
        if self.head_epochs + self.body_epochs == 0:
            raise ValueError(
                "FedRep: 'head_epochs' and 'body_epochs' must not both be 0, got 0 and 0."
            )

    def train_locally(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        ctx: LocalContext,
        *,
        epochs: int | None = None,
    ) -> tuple[float, int]:
        """The head phase, then the body phase, with one optimizer (frozen parameters get no
        gradient, so it leaves them)."""
        loss_sum, seen = 0.0, 0
        for phase, phase_epochs in (("head", self.head_epochs), ("body", self.body_epochs)):
            ctx.extras["fedrep_phase"] = phase
            part_sum, part_seen = self.train_phase(
                model,
                ctx,
                epochs=phase_epochs,
                trainable=has_prefix(self.personal_prefixes, inside=phase == "head"),
                optimizer=optimizer,
            )
            loss_sum, seen = loss_sum + part_sum, seen + part_seen
        return loss_sum, seen
