"""FedBN: normalization layers stay at each site (Li, Jiang, Zhang, Kamp, Dou, ICLR 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from fedlib.methods.fedper import FedPer

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.modules.instancenorm._InstanceNorm)
"""Module types whose parameters and statistics FedBN keeps local."""


def norm_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the normalization layers of ``model`` (weights, biases, statistics)."""
    keys = set()
    for prefix, module in model.named_modules():
        if isinstance(module, NORM_LAYERS):
            keys.update(f"{prefix}.{name}" for name in module.state_dict())
    return keys


@dataclass(kw_only=True)
class FedBN(FedPer):
    r"""FedAvg for every layer except normalization, which each site keeps for itself.

    Scanners and sites shift the feature statistics (intensity, contrast, texture); FedBN lets
    each client keep its own normalization affine parameters and running statistics while the
    rest of the network is averaged:

    .. math:: w^{t+1}_{\text{shared}} = \sum_k \frac{n_k}{n} w^{t+1}_{k,\text{shared}}, \qquad
              (\gamma_k, \beta_k, \mu_k, \sigma^2_k) \text{ never leave client } k.

    Specialization uses client k's own normalization with the global weights (the paper's
    evaluation). A global model for generalization needs normalization layers too: with
    ``pfl_global_head="avg_local"`` (default) the clients upload theirs in the side channel
    and the server evaluates with their ``n_k``-weighted mean (never sent back); with
    ``"none"``, with the never-trained initial ones.

    Raises ``ValueError`` for a model without normalization layers (FedBN would be FedAvg).

    References
    ----------
    Li, Jiang, Zhang, Kamp, Dou, "FedBN: Federated Learning on Non-IID Features via Local
    Batch Normalization", ICLR 2021, arXiv:2102.07623; github.com/med-air/FedBN.
    """

    name: ClassVar[str] = "fedbn"

    def is_personal(self, key: str, model: nn.Module) -> bool:
        """Normalization layers' entries stay local (``personal_prefixes`` is not used)."""
        cached = getattr(self, "_norm_keys", None)
        if cached is None or cached[0] is not model:
            keys = norm_keys(model)
            if not keys:
                raise ValueError(
                    "FedBN: the model has no normalization layers (BatchNorm, GroupNorm, "
                    "LayerNorm, InstanceNorm); FedBN would be FedAvg. Use a model with them, "
                    "e.g. SmallCNN(norm='batch')."
                )
            cached = self._norm_keys = (model, keys)
        return key in cached[1]
