"""FedNPR and FedNPR-Per: balanced softmax plus non-parametric regularization (Wicaksana, Yan,
Cheng, arXiv:2407.12446, 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedlib.methods.fedavg import FedAvg
from fedlib.methods.fedper import FedPer
from fedlib.methods.npr import NPR

RECIPE = {
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 5e-4,
    "optimizer_state": "persist",
    "batch_size": 64,
    "lr_milestones": (60, 70),
}
"""The released code's training options (80 rounds, one local epoch; Simulation
``round_order="aggregate_first"`` reproduces its first round): ``get_method("fednpr",
**RECIPE)``. The classes' defaults are FedAvg's, so that FedNPR differs from FedAvg-BSM by the
NPR term only."""


@dataclass(kw_only=True)
class FedNPR(NPR, FedAvg):
    r"""FedAvg with balanced softmax on the local prior and the NPR term; every weight shared.

    Client k minimizes, per batch,

    .. math::

        L_k = \mathrm{CE}\big(z + \log(\pi_k + 10^{-9}),\ y\big) + \lambda\, L_{NPR},

    with :math:`z` the linear head's logits (prediction uses the raw :math:`z`),
    :math:`\pi_k = n_{k,c}/n_k` the local prior, and :math:`L_{NPR}` the cross-entropy of the
    standardized max-cosine scores against the client's own sub-centroids
    (:class:`fedlib.methods.npr.NPR`). The server averages every floating-point tensor,
    BatchNorm statistics and the head included (FedAvg). The sub-centroids, the class counts
    and the optimizer state stay on the client.

    Parameters
    ----------
    loss : default "bsm"
        Balanced softmax; any loss of :class:`fedlib.core.Algorithm` may be chosen.
    npr_* :
        The NPR options (:class:`fedlib.methods.npr.NPR`): ``npr_lambda`` (0.05; the code's
        effective weight is 1.0, ``npr_lambda_form="code"``), ``npr_K`` (4), ``npr_assign``
        ("sinkhorn"; "random" is the released code's behaviour), ...

    Every other option is FedAvg's; :data:`RECIPE` holds the released code's training options.

    References
    ----------
    Wicaksana, Yan, Cheng, "Non-parametric Regularization for Class Imbalance Federated Medical
    Image Classification", arXiv:2407.12446 (2024); github.com/Jwicaksana/FedNPR. Balanced
    softmax: Ren et al., NeurIPS 2020, arXiv:2007.10740.
    """

    name: ClassVar[str] = "fednpr"
    loss: str = "bsm"


@dataclass(kw_only=True)
class FedNPRPer(NPR, FedPer):
    r"""FedNPR with the final linear layer kept on each client (FedPer-style).

    The local objective is :class:`FedNPR`'s; the server averages and sends back the feature
    extractor (BatchNorm included) only. Each client keeps its head, which is its prediction
    head for specialization. The released code runs this variant; its server also averages
    the local heads without sending them back. fedlib uploads a client's head only with
    ``pfl_global_head="avg_local"`` (for an evaluation head of the global model, in the side
    channel, never sent back); by default nothing but the body leaves the client, and the
    global model keeps its initial head.

    Parameters
    ----------
    loss : default "bsm"
    pfl_global_head : {"none", "avg_local"}, default "none"
        See :class:`fedlib.methods.FedPer`.
    personal_prefixes : default ("head.",)
    npr_* :
        As :class:`FedNPR`.

    References
    ----------
    Wicaksana, Yan, Cheng, arXiv:2407.12446 (2024). FedPer: Arivazhagan et al.,
    arXiv:1912.00818 (2019).
    """

    name: ClassVar[str] = "fednpr_per"
    loss: str = "bsm"
    pfl_global_head: str = "none"
