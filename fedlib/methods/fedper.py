"""FedPer (Arivazhagan, Aggarwal, Singh, Choudhary, arXiv:1912.00818, 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from fedlib.methods.fedavg import FedAvg


@dataclass(kw_only=True)
class FedPer(FedAvg):
    """Base layers are shared and averaged; personalization layers stay on the client.

    Parameters
    ----------
    personal_prefixes : tuple of str, default ("head.",)
        State-dict key prefixes that stay local (the final linear layer by default).
    """

    name: ClassVar[str] = "fedper"
    personalized: ClassVar[bool] = True
    personal_prefixes: tuple[str, ...] = ("head.",)

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

    def shared_keys(self, model: nn.Module) -> list[str]:
        return [k for k in super().shared_keys(model) if not k.startswith(self.personal_prefixes)]
