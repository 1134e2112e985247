"""SCAFFOLD: control variates against client drift (Karimireddy et al., ICML 2020)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedlib.core.algorithm import LocalContext
from fedlib.core.protocol import ClientReply, GlobalState, RoundMessage
from fedlib.methods.fedavg import FedAvg

SERVER_CONTROL = "scaffold.c."
"""Message side data: the server control variate ``c``, one tensor per trainable parameter."""
CONTROL_DELTA = "scaffold.dc."
"""Reply side data: the client's control-variate change ``c_i^+ - c_i``."""


@dataclass(kw_only=True)
class SCAFFOLD(FedAvg):
    r"""FedAvg whose local gradients are corrected by control variates.

    Each local step of client i uses the corrected gradient

    .. math:: y \leftarrow y - \eta\,\big(g_i(y) - c_i + c\big),

    where :math:`c` (server) and :math:`c_i` (client, kept in its state) estimate the
    federation's and the client's update directions. After :math:`K` local steps from the
    received model :math:`x`, the client sets (the paper's option II)

    .. math:: c_i^+ = c_i - c + \frac{x - y_i}{K \eta},

    sends :math:`y_i` (averaged as in FedAvg) and :math:`\Delta c_i = c_i^+ - c_i` (side
    channel), and the server updates :math:`c \leftarrow c + \frac{1}{N} \sum_{i \in S}
    \Delta c_i` over the :math:`N` clients of the federation. :math:`c` and :math:`c_i` start at
    zero. Option II assumes plain SGD, so SCAFFOLD's default ``momentum`` is 0.

    The correction is applied by gradient hooks on the parameters, so the logged training loss
    is the plain local loss. :math:`K` is the number of optimizer steps the round takes
    (``local_steps``, or ``local_epochs`` times the number of batches), :math:`\eta` the
    round's learning rate.

    References
    ----------
    Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, "SCAFFOLD: Stochastic Controlled Averaging
    for Federated Learning", ICML 2020, arXiv:1910.06378.
    """

    name: ClassVar[str] = "scaffold"
    client_state_fields: ClassVar[dict[str, str]] = {
        "control": "c_i, the client control variate (one tensor per trainable parameter)",
    }
    momentum: float = 0.0

    # ------------------------------------------------------------------ server
    def init_global(self, model: nn.Module) -> GlobalState:
        state = super().init_global(model)
        state.extra["scaffold_control"] = {
            name: torch.zeros_like(p, device="cpu") for name, p in model.named_parameters()
        }
        return state

    def message_for(self, state: GlobalState, client_id: int) -> RoundMessage:
        message = super().message_for(state, client_id)
        side = dict(message.side)
        for name, value in state.extra["scaffold_control"].items():
            side[SERVER_CONTROL + name] = value
        return dataclasses.replace(message, side=side)

    def process_side(self, state: GlobalState, replies: Sequence[ClientReply]) -> None:
        """``c <- c + (1/N) sum_i dc_i`` over the replies (N: clients in the federation)."""
        super().process_side(state, replies)
        total = state.extra.get("num_clients") or len(replies)
        control = {}
        for name, value in state.extra["scaffold_control"].items():
            change = sum(r.side[CONTROL_DELTA + name].to(torch.float64) for r in replies)
            control[name] = (value.to(torch.float64) + change / total).to(value.dtype)
        state.extra["scaffold_control"] = control

    # ------------------------------------------------------------------ client
    def before_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        """Register hooks adding ``c - c_i`` to every parameter's gradient."""
        own = ctx.state.method.get("control", {})
        hooks = []
        for name, p in model.named_parameters():
            c = ctx.message.side[SERVER_CONTROL + name].to(ctx.device)
            correction = c - own[name].to(ctx.device) if name in own else c
            hooks.append(p.register_hook(lambda grad, corr=correction: grad + corr))
        ctx.extras["scaffold_hooks"] = hooks

    def after_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        """Remove the hooks; ``c_i^+ = c_i - c + (x - y_i) / (K lr)``; send ``c_i^+ - c_i``."""
        for hook in ctx.extras.pop("scaffold_hooks"):
            hook.remove()
        steps = self.local_steps_taken(len(ctx.data))
        own = ctx.state.method.get("control", {})
        new_control = {}
        for name, p in model.named_parameters():
            x = ctx.message.arrays[name].to(torch.float64)
            c = ctx.message.side[SERVER_CONTROL + name].to(torch.float64)
            c_i = own[name].to(torch.float64) if name in own else torch.zeros_like(c)
            updated = c_i - c + (x - p.detach().cpu().to(torch.float64)) / (steps * ctx.lr)
            new_control[name] = updated.to(p.dtype)
            ctx.side[CONTROL_DELTA + name] = (updated - c_i).to(p.dtype)
        ctx.state.method["control"] = new_control

    def local_steps_taken(self, num_examples: int) -> int:
        """K: optimizer steps of one round on ``num_examples`` examples."""
        if self.local_steps is not None:
            return self.local_steps
        return self.local_epochs * max(1, math.ceil(num_examples / self.batch_size))

    def shared_keys(self, model: nn.Module) -> list[str]:
        keys = super().shared_keys(model)
        missing = [n for n, _ in model.named_parameters() if n not in keys]
        if missing:
            raise ValueError(
                f"SCAFFOLD: every trainable parameter must be shared; {missing[:3]} are not."
            )
        return keys

