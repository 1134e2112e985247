"""FedPer (Arivazhagan, Aggarwal, Singh, Choudhary, arXiv:1912.00818, 2019)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedlib._validation import Options
from fedlib.core.aggregation import weighted_average
from fedlib.core.algorithm import LocalContext
from fedlib.core.protocol import ClientReply, GlobalState
from fedlib.methods.fedavg import FedAvg

UPLOAD_PREFIX = "local_head."
"""Side-channel keys of a client's personal tensors, uploaded for the evaluation head only."""


@dataclass(kw_only=True)
class FedPer(FedAvg):
    """Base layers are shared and averaged; personalization layers stay on the client.

    Training never averages the personal layers: each client keeps its own and the server's
    copy is never sent. For **generalization** a global model needs a head, so with
    ``pfl_global_head="avg_local"`` each client also uploads its trained personal tensors and
    the server keeps their example-weighted mean, ``sum_k (n_k/n) W_k``, as an evaluation-only
    head (``GlobalState.extra["avg_local_head"]``); it travels in the reply's side channel and
    is never sent back.

    Parameters
    ----------
    personal_prefixes : tuple of str, default ("head.",)
        State-dict key prefixes that stay local (the final linear layer by default).
    pfl_global_head : {"avg_local", "none"}, default "avg_local"
        The head of the global model when it is evaluated: the clients' heads averaged (needs
        the upload), or the server's never-trained initial head.
    """

    name: ClassVar[str] = "fedper"
    personalized: ClassVar[bool] = True
    spec_model: str = "personal"
    personal_prefixes: tuple[str, ...] = ("head.",)
    pfl_global_head: str = "avg_local"

    _constraints: ClassVar[dict] = {"pfl_global_head": Options(("avg_local", "none"))}

    def _check_consistency(self) -> None:
        super()._check_consistency()
        if not self.personal_prefixes or not all(
            isinstance(p, str) for p in self.personal_prefixes
        ):
            raise ValueError(
                "FedPer: 'personal_prefixes' must be a non-empty tuple of str, "
                f"got {self.personal_prefixes!r}."
            )
        self.personal_prefixes = tuple(self.personal_prefixes)

    def is_personal(self, key: str, model: nn.Module) -> bool:
        """Whether state-dict entry ``key`` stays on the client (under ``personal_prefixes``)."""
        return key.startswith(self.personal_prefixes)

    def shared_keys(self, model: nn.Module) -> list[str]:
        return [k for k in super().shared_keys(model) if not self.is_personal(k, model)]

    def after_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        """With ``avg_local``, upload the trained personal tensors in the side channel."""
        super().after_local_training(model, ctx)
        if self.pfl_global_head == "avg_local":
            for key, value in model.state_dict().items():
                if self.is_personal(key, model) and value.is_floating_point():
                    ctx.side[UPLOAD_PREFIX + key] = value.detach().cpu().clone()

    def process_side(self, state: GlobalState, replies: Sequence[ClientReply]) -> None:
        """The uploaded heads' ``n_k``-weighted mean becomes the evaluation head."""
        super().process_side(state, replies)
        uploads = [
            {k[len(UPLOAD_PREFIX):]: v for k, v in r.side.items() if k.startswith(UPLOAD_PREFIX)}
            for r in replies
        ]
        if uploads and uploads[0]:
            state.extra["avg_local_head"] = weighted_average(
                uploads, [r.num_examples for r in replies]
            )

    def eval_weights(
        self, global_weights: Mapping[str, torch.Tensor], state: GlobalState
    ) -> dict[str, torch.Tensor]:
        weights = super().eval_weights(global_weights, state)
        weights.update(state.extra.get("avg_local_head", {}))
        return weights
