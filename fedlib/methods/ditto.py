"""Ditto: a private personal model next to the federated one (Li et al., ICML 2021)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedlib._validation import Interval
from fedlib.core.algorithm import LocalContext
from fedlib.core.protocol import ClientState
from fedlib.methods.fedavg import FedAvg
from fedlib.methods.fedprox import proximal_term


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@dataclass(kw_only=True)
class Ditto(FedAvg):
    r"""FedAvg plus a private personal model per client, pulled toward the global model.

    Each round, client k first trains the global model :math:`w` exactly as FedAvg (only
    :math:`w` is sent), then its personal model :math:`v_k` for ``personal_epochs`` epochs on

    .. math:: F_k(v) + \frac{\lambda}{2} \lVert v - w^t \rVert^2,

    where :math:`w^t` is the model received this round (the proximal gradient is
    :math:`\lambda (v - w^t)`, over trainable parameters). :math:`v_k` lives in the client's
    state (``ClientState.method["personal_model"]``, every tensor) and starts as the first model it
    receives. The personal pass draws the same mini-batches (and dropout masks, on CPU) a
    client training alone would, so :math:`\lambda = 0` is local-only training bit for bit.
    Evaluation: :math:`w` for generalization, :math:`v_k` for specialization. Doubles the
    local compute.

    Parameters
    ----------
    lam : float >= 0, default 1.0
        :math:`\lambda` (tuned per dataset in the paper).
    personal_epochs : int >= 1, default 1

    References
    ----------
    Li, Hu, Beirami, Smith, "Ditto: Fair and Robust Federated Learning Through
    Personalization", ICML 2021, arXiv:2012.04221; github.com/litian96/ditto.
    """

    name: ClassVar[str] = "ditto"
    personalized: ClassVar[bool] = True
    client_state_fields: ClassVar[dict[str, str]] = {
        "personal_model": "v_k, the personal model (every state-dict tensor, CPU)",
        "personal_optimizer": "the personal model's optimizer state (optimizer_state='persist')",
    }
    spec_model: str = "personal"
    lam: float = 1.0
    personal_epochs: int = 1

    _constraints: ClassVar[dict] = {
        "lam": Interval(float, 0, None, closed="left"),
        "personal_epochs": Interval(int, 1, None),
    }

    def local_loss(self, model: nn.Module, batch, ctx: LocalContext) -> torch.Tensor:
        loss = super().local_loss(model, batch, ctx)
        if ctx.extras.get("ditto_phase") != "personal" or self.lam == 0:
            return loss
        return loss + 0.5 * self.lam * proximal_term(model, ctx.global_params)

    def train_locally(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        ctx: LocalContext,
        *,
        epochs: int | None = None,
    ) -> tuple[float, int]:
        """FedAvg's pass on ``w``, then the personal pass on ``v_k`` (the model ends on ``w``)."""
        personal_generator = torch.Generator().manual_seed(0)
        personal_generator.set_state(ctx.generator.get_state())
        cpu_rng = torch.get_rng_state()
        received = ctx.state.method.get("personal_model") or _cpu_copy(model)
        result = super().train_locally(model, optimizer, ctx, epochs=epochs)
        trained_w = _cpu_copy(model)
        model.load_state_dict(received)
        personal_optimizer = self.make_optimizer(model, lr=ctx.lr)
        saved = ctx.state.method.get("personal_optimizer")
        if self.optimizer_state == "persist" and saved is not None:
            self.load_optimizer_state(personal_optimizer, saved, ctx.lr)
        personal_ctx = dataclasses.replace(
            ctx, generator=personal_generator, extras={**ctx.extras, "ditto_phase": "personal"}
        )
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(cpu_rng)
            loss_sum, seen = self.train_phase(
                model, personal_ctx, epochs=self.personal_epochs, optimizer=personal_optimizer
            )
        ctx.metrics["personal_loss"] = loss_sum / max(seen, 1)
        ctx.state.method["personal_model"] = _cpu_copy(model)
        if self.optimizer_state == "persist":
            ctx.state.method["personal_optimizer"] = personal_optimizer.state_dict()
        model.load_state_dict(trained_w)
        return result

    def personal_weights(
        self, global_weights: Mapping[str, torch.Tensor], state: ClientState
    ) -> dict[str, torch.Tensor]:
        """The personal model ``v_k`` (the global model for a client that never trained)."""
        merged = dict(global_weights)
        merged.update(state.method.get("personal_model", {}))
        return merged
