"""FedBABU: body-only federated training, head fine-tuned for evaluation (Oh et al., ICLR 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from fedlib._validation import NONE, AnyOf, Interval, Options
from fedlib.core.algorithm import LocalContext
from fedlib.methods.fedavg import FedAvg
from fedlib.methods.finetune import finetune


@dataclass(kw_only=True)
class FedBABU(FedAvg):
    r"""Only the body is trained and averaged, the head stays frozen; clients fine-tune to test.

    The head keeps its random initialisation during FL. Each client fine-tunes before
    specialization is measured.

    Federated phase, client k: :math:`\phi_k = \arg\min_\phi F_k(\phi, h^0)` with the head
    :math:`h^0` frozen (learning rate 0: it is left out of the optimizer), then
    :math:`\phi^{t+1} = \sum_k (n_k/n)\,\phi_k`. The head is never sent; every party starts
    from the same seeded initial head, so it is bit-identical everywhere, forever.

    Evaluation: generalization uses the global body with the frozen head. Specialization
    uses :meth:`finetune_for_eval`: the simulator loads client k's weights (global body,
    frozen head) into a scratch model and fine-tunes it for ``ft_epochs`` epochs on the
    client's training data (``babu_ft_part="full"``: body and head; ``"head"``: head only),
    then evaluates it. Fine-tuned weights are never stored nor sent, and every evaluation
    fine-tunes the current global model afresh, as the paper does.

    Parameters
    ----------
    head_prefixes : tuple of str, default ("head.",)
        State-dict prefixes of the frozen head.
    ft_epochs : int >= 0, default 5
    babu_ft_part : {"full", "head"}, default "full"
    ft_lr : float or None, default None
        Fine-tuning learning rate; ``None`` uses ``lr`` (the reference scripts use 0.1,
        momentum 0.9, batch 50 for both phases).

    References
    ----------
    Oh, Kim, Yun, "FedBABU: Toward Enhanced Representation for Federated Image
    Classification", ICLR 2022, arXiv:2106.06042; github.com/jhoon-oh/FedBABU.
    """

    name: ClassVar[str] = "fedbabu"
    personalized: ClassVar[bool] = True
    spec_model: str = "personal"
    head_prefixes: tuple[str, ...] = ("head.",)
    ft_epochs: int = 5
    babu_ft_part: str = "full"
    ft_lr: float | None = None

    _constraints: ClassVar[dict] = {
        "ft_epochs": Interval(int, 0, None),
        "babu_ft_part": Options(("full", "head")),
        "ft_lr": AnyOf(NONE, Interval(float, 0, None, closed="neither")),
    }

    def _check_consistency(self) -> None:
        super()._check_consistency()
        if not self.head_prefixes or not all(isinstance(p, str) for p in self.head_prefixes):
            raise ValueError(
                "FedBABU: 'head_prefixes' must be a non-empty tuple of str, "
                f"got {self.head_prefixes!r}."
            )
        self.head_prefixes = tuple(self.head_prefixes)

    def shared_keys(self, model: nn.Module) -> list[str]:
        return [k for k in super().shared_keys(model) if not k.startswith(self.head_prefixes)]

    def before_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        """Freeze the head for the round (the optimizer is built after this: it leaves the
        head out)."""
        for name, p in model.named_parameters():
            if name.startswith(self.head_prefixes):
                p.requires_grad_(False)

    def after_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        for p in model.parameters():
            p.requires_grad_(True)

    def finetune_for_eval(self, model: nn.Module, ctx: LocalContext) -> None:
        """``ft_epochs`` epochs of the local loss on the client's training data: body and head
        (``babu_ft_part="full"``) or the head alone."""
        finetune(
            self, model, ctx, epochs=self.ft_epochs,
            lr=self.lr if self.ft_lr is None else self.ft_lr,
            head_prefixes=self.head_prefixes if self.babu_ft_part == "head" else None,
        )
