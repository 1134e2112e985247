"""FedAvg + local fine-tuning: the personalization reference (e.g. Oh et al., ICLR 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from fedlib._validation import NONE, AnyOf, Interval, Options
from fedlib.core.algorithm import Algorithm, LocalContext, has_prefix
from fedlib.methods.fedavg import FedAvg


def finetune(
    method: Algorithm,
    model: nn.Module,
    ctx: LocalContext,
    *,
    epochs: int,
    lr: float,
    head_prefixes: tuple[str, ...] | None = None,
) -> None:
    """``epochs`` epochs of ``method``'s local loss on the client's training data: every
    parameter, or only those under ``head_prefixes``. Used for evaluation only."""
    if epochs == 0 or len(ctx.data) == 0:
        return
    trainable = None if head_prefixes is None else has_prefix(tuple(head_prefixes))
    method.train_phase(model, ctx, epochs=epochs, trainable=trainable, lr=lr)


@dataclass(kw_only=True)
class FedAvgFT(FedAvg):
    r"""FedAvg for training; each client fine-tunes the global model before it is evaluated.

    Specialization of client k evaluates :math:`w_k = \mathrm{FT}_k(w^T)`: ``ft_epochs``
    epochs of the local loss on the client's training data, starting from the global model,
    on every parameter (``ft_part="full"``) or on the head alone (``"head"``). The fine-tuned
    weights are used for evaluation only, never sent nor stored. Generalization evaluates the
    global model, as FedAvg. This is the baseline FedBABU compares against (FedAvg + FT).

    Parameters
    ----------
    ft_epochs : int >= 0, default 5
    ft_lr : float or None, default None
        Fine-tuning learning rate; ``None`` uses ``lr``.
    ft_part : {"full", "head"}, default "full"
    head_prefixes : tuple of str, default ("head.",)
        The head's state-dict prefixes (for ``ft_part="head"``).

    References
    ----------
    Oh, Kim, Yun, "FedBABU: Toward Enhanced Representation for Federated Image
    Classification", ICLR 2022, arXiv:2106.06042 (FedAvg with fine-tuning as the baseline).
    """

    name: ClassVar[str] = "fedavg_ft"
    personalized: ClassVar[bool] = True
    spec_model: str = "personal"
    ft_epochs: int = 5
    ft_lr: float | None = None
    ft_part: str = "full"
    head_prefixes: tuple[str, ...] = ("head.",)

    _constraints: ClassVar[dict] = {
        "ft_epochs": Interval(int, 0, None),
        "ft_lr": AnyOf(NONE, Interval(float, 0, None, closed="neither")),
        "ft_part": Options(("full", "head")),
    }

    def finetune_for_eval(self, model: nn.Module, ctx: LocalContext) -> None:
        finetune(
            self, model, ctx, epochs=self.ft_epochs,
            lr=self.lr if self.ft_lr is None else self.ft_lr,
            head_prefixes=self.head_prefixes if self.ft_part == "head" else None,
        )
