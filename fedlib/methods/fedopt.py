"""Server optimizers: FedAvgM (Hsu, Qi, Brown, 2019) and FedAdam / FedYogi (Reddi et al.,
ICLR 2021)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from fedlib._validation import Interval
from fedlib.core.protocol import GlobalState
from fedlib.methods.fedavg import FedAvg


def pseudo_gradients(
    previous: GlobalState, averaged: Mapping[str, torch.Tensor]
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, torch.dtype]]:
    """``(key, x_t, delta_t = mean - x_t, dtype)`` in float64 for every floating-point averaged
    key; integer buffers (``bn_int_buffers="average_cast"``) keep the plain average."""
    for key, mean in averaged.items():
        if mean.is_floating_point():
            x = previous.weights[key].to(torch.float64)
            yield key, x, mean.to(torch.float64) - x, mean.dtype


@dataclass(kw_only=True)
class FedOpt(FedAvg):
    r"""FedAvg's clients; the server treats the averaged update as a gradient.

    With the pseudo-gradient :math:`\Delta_t = \bar w_t - x_t` (the clients' average minus the
    current global model; float tensors only), the server keeps moments in
    ``GlobalState.extra`` (starting at :math:`m_0 = 0`, :math:`v_0 = 0`):

    .. math::

        m_t = \beta_1 m_{t-1} + (1 - \beta_1)\Delta_t, \qquad
        x_{t+1} = x_t + \eta\, \frac{m_t}{\sqrt{v_t} + \tau},

    with :math:`v_t` the subclass's second moment (no bias correction, as in the paper's
    Algorithm 2). Subclasses: :class:`FedAdam`, :class:`FedYogi`; :class:`FedAvgM` is the
    first-moment-only variant.

    Parameters
    ----------
    server_lr : float > 0, default 0.01
        :math:`\eta` (the paper tunes it on a grid; 10^{-2} to 10^{-1} are typical for Adam).
    server_beta1 : float in [0, 1), default 0.9
    server_beta2 : float in [0, 1), default 0.99
    server_tau : float > 0, default 1e-3
        :math:`\tau`, the adaptivity floor.

    References
    ----------
    Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan, "Adaptive Federated
    Optimization", ICLR 2021, arXiv:2003.00295.
    """

    name: ClassVar[str] = "fedopt"
    server_lr: float = 0.01
    server_beta1: float = 0.9
    server_beta2: float = 0.99
    server_tau: float = 1e-3

    _constraints: ClassVar[dict] = {
        "server_lr": Interval(float, 0, None, closed="neither"),
        "server_beta1": Interval(float, 0, 1, closed="left"),
        "server_beta2": Interval(float, 0, 1, closed="left"),
        "server_tau": Interval(float, 0, None, closed="neither"),
    }

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Adam's :math:`v_t = \\beta_2 v_{t-1} + (1 - \\beta_2)\\Delta_t^2`."""
        return self.server_beta2 * v + (1 - self.server_beta2) * delta.pow(2)

    def server_step(
        self,
        previous: GlobalState,
        averaged: Mapping[str, torch.Tensor],
        extra: dict[str, Any],
    ) -> dict[str, torch.Tensor]:
        out = dict(averaged)
        m_all = dict(extra.get("server_m", {}))
        v_all = dict(extra.get("server_v", {}))
        for key, x, delta, dtype in pseudo_gradients(previous, averaged):
            m = self.server_beta1 * m_all.get(key, torch.zeros_like(x)) + (
                1 - self.server_beta1
            ) * delta
            v = self.second_moment(v_all.get(key, torch.zeros_like(x)), delta)
            out[key] = (x + self.server_lr * m / (v.sqrt() + self.server_tau)).to(dtype)
            m_all[key], v_all[key] = m, v
        extra["server_m"], extra["server_v"] = m_all, v_all
        return out


@dataclass(kw_only=True)
class FedAdam(FedOpt):
    r"""Server Adam: :math:`v_t = \beta_2 v_{t-1} + (1 - \beta_2)\Delta_t^2` (see
    :class:`FedOpt`; Reddi et al., ICLR 2021, arXiv:2003.00295)."""

    name: ClassVar[str] = "fedadam"


@dataclass(kw_only=True)
class FedYogi(FedOpt):
    r"""Server Yogi: :math:`v_t = v_{t-1} - (1 - \beta_2)\Delta_t^2
    \operatorname{sign}(v_{t-1} - \Delta_t^2)` (see :class:`FedOpt`; Reddi et al., ICLR 2021,
    arXiv:2003.00295)."""

    name: ClassVar[str] = "fedyogi"

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        square = delta.pow(2)
        return v - (1 - self.server_beta2) * square * torch.sign(v - square)


@dataclass(kw_only=True)
class FedAvgM(FedAvg):
    r"""Server momentum: :math:`v_t = \beta v_{t-1} + \Delta_t`,
    :math:`x_{t+1} = x_t + \eta\, v_t`, with :math:`\Delta_t = \bar w_t - x_t`.

    :math:`\beta = 0` and :math:`\eta = 1` is FedAvg exactly.

    Parameters
    ----------
    server_lr : float > 0, default 1.0
    server_momentum : float in [0, 1), default 0.9

    References
    ----------
    Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated
    Visual Classification", arXiv:1909.06335, 2019.
    """

    name: ClassVar[str] = "fedavgm"
    server_lr: float = 1.0
    server_momentum: float = 0.9

    _constraints: ClassVar[dict] = {
        "server_lr": Interval(float, 0, None, closed="neither"),
        "server_momentum": Interval(float, 0, 1, closed="left"),
    }

    def server_step(
        self,
        previous: GlobalState,
        averaged: Mapping[str, torch.Tensor],
        extra: dict[str, Any],
    ) -> dict[str, torch.Tensor]:
        out = dict(averaged)
        velocity = dict(extra.get("server_velocity", {}))
        for key, x, delta, dtype in pseudo_gradients(previous, averaged):
            v = self.server_momentum * velocity.get(key, torch.zeros_like(x)) + delta
            out[key] = (x + self.server_lr * v).to(dtype)
            velocity[key] = v
        extra["server_velocity"] = velocity
        return out
