"""Quantized ``Conv2d`` and ``Linear`` layers with four modes, and the bitwidth maths of SDQ.

Modes of a :class:`QuantLayer`:

* ``"fp"``: full precision, the layer is its ``nn`` parent;
* ``"fixed"``: weights at a fixed bitwidth, ``w_q = Q_b(w)`` (uniform QAT, SDQ's stage 2);
* ``"search"``: SDQ's stochastic choice between two adjacent candidate bitwidths;
* ``"interp"``: the linear-interpolation baseline (FracBits-like), a continuous bitwidth.

SDQ's differentiable bitwidth parameters (DBPs), ladder reading (spec §3): candidates sorted
descending ``c_1 > ... > c_M``; a layer on rung ``r`` uses the pair ``b_hi = c_r``,
``b_lo = c_{r+1}`` and one DBP ``beta = P(use b_hi)``::

    u ~ U(delta, 1 - delta), g = log u - log(1 - u)          (logistic noise, delta = 1e-6)
    m_soft = sigmoid((logit beta + g) / tau)
    m_hard = 1[logit beta + g > 0]                           (exactly Bernoulli(beta))
    m      = m_hard + m_soft - sg(m_soft)                    ("gumbel_st", default)
    m      = m_hard + beta - sg(beta)                        ("bernoulli_st")
    w_q    = m Q_{b_hi}(w) + (1 - m) Q_{b_lo}(w)
    E[b]   = beta b_hi + (1 - beta) b_lo

``sg`` stops the gradient. In the forward pass ``m`` equals ``m_hard`` exactly, so ``w_q`` is
always one of the two quantized weights.

References
----------
Huang, Shen, Li, Liu, Hu, Wicaksana, Xing, Cheng, "SDQ: Stochastic Differentiable Quantization
with Mixed Precision", ICML 2022, arXiv:2206.04459 (Figure 1: the stochastic choice).
Jang, Gu, Poole, "Categorical reparameterization with Gumbel-softmax", ICLR 2017,
arXiv:1611.01144 (the straight-through Gumbel estimator).
Yang, Jin, "FracBits: Mixed precision quantization via fractional bit-widths", AAAI 2021,
arXiv:2007.02017 (the interpolation baseline).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedlib._validation import Interval, Options, check_param
from fedlib.quant.quantizers import (
    BINARY_MODES,
    FULL_PRECISION_BITS,
    act_quant,
    quantize_weight,
    quantize_weight_pair,
)

__all__ = [
    "DBP_ESTIMATORS",
    "DBP_PARAMS",
    "MODES",
    "QuantConv2d",
    "QuantLayer",
    "QuantLinear",
    "bit_parameters",
    "check_candidates",
    "deployable_state_dict",
    "interpolated_weight",
    "mixed_weight",
    "quant_layers",
    "quantize_model",
    "set_mode",
    "stochastic_mask",
    "weight_parameters",
]

MODES = ("fp", "fixed", "search", "interp")
DBP_ESTIMATORS = ("gumbel_st", "bernoulli_st")
DBP_PARAMS = ("sigmoid", "clamp")
NOISE_DELTA = 1e-6
"""``u ~ U(delta, 1 - delta)``: keeps the logistic noise finite."""

_EXTRA_KEYS = ("theta", "interp_bits", "rung", "bits")


# --------------------------------------------------------------------------- DBP maths
def stochastic_mask(
    beta: torch.Tensor,
    *,
    estimator: str = "gumbel_st",
    tau: float = 1.0,
    generator: torch.Generator | None = None,
    logit: torch.Tensor | None = None,
) -> torch.Tensor:
    """One draw of SDQ's choice ``m`` (1: the higher bitwidth), with a straight-through gradient.

    Parameters
    ----------
    beta : Tensor, shape ()
        ``P(m = 1)`` in [0, 1].
    estimator : {"gumbel_st", "bernoulli_st"}
        "gumbel_st": ``m = m_hard + m_soft - sg(m_soft)`` with the logistic-noise relaxation at
        temperature ``tau``; "bernoulli_st": ``m = m_hard + beta - sg(beta)``, so
        ``dm/dbeta = 1``.
    tau : float > 0
    generator : torch.Generator, optional
        Source of the uniform draw (one draw per call: the spec's ``sample_granularity="layer"``).
    logit : Tensor, optional
        ``logit beta`` when the caller has it exactly (``dbp_param="sigmoid"``: it is theta).

    Returns
    -------
    Tensor, shape (): exactly 0.0 or 1.0 in the forward pass.
    """
    u = torch.rand((), generator=generator, dtype=beta.dtype, device=beta.device)
    u = NOISE_DELTA + (1 - 2 * NOISE_DELTA) * u
    if estimator == "bernoulli_st":
        hard = (u < beta).to(beta.dtype)
        return hard + (beta - beta.detach())
    if estimator != "gumbel_st":
        check_param("stochastic_mask", "estimator", estimator, Options(DBP_ESTIMATORS))
    if logit is None:
        logit = torch.log(beta) - torch.log1p(-beta)
    noisy = logit + (torch.log(u) - torch.log1p(-u))
    soft = torch.sigmoid(noisy / tau)
    hard = (noisy > 0).to(beta.dtype)
    return hard + (soft - soft.detach())


def mixed_weight(m: torch.Tensor, q_hi: torch.Tensor, q_lo: torch.Tensor) -> torch.Tensor:
    """``w_q = m Q_hi + (1 - m) Q_lo``: exactly ``Q_hi`` at m = 1 and ``Q_lo`` at m = 0."""
    return m * q_hi + (1 - m) * q_lo


def interpolated_weight(
    w: torch.Tensor, bits: torch.Tensor, *, max_bits: int, binary_mode: str = "sign_mean"
) -> torch.Tensor:
    """Linear interpolation between the two integer bitwidths around a continuous ``b``.

    ``lo = min(floor(b), b_max - 1)``, ``f = b - lo``, ``w_q = f Q_{lo+1}(w) + (1 - f) Q_lo(w)``,
    so ``dw_q/db = Q_{lo+1} - Q_lo``. An integer ``b`` gives ``Q_b`` exactly; b = 2.5 gives
    ``(Q_2 + Q_3) / 2``.

    [O] The spec writes ``Q_ceil(b)``; at an integer b that equals ``Q_floor(b)`` and the
    gradient in b vanishes, so a bitwidth could never leave an integer. Interpolating towards
    ``floor(b) + 1`` keeps the same values and a non-zero gradient.
    """
    lo = int(min(math.floor(float(bits.detach())), max_bits - 1))
    return mixed_weight(bits - lo, *quantize_weight_pair(w, lo + 1, lo, binary_mode))


def check_candidates(owner: str, candidates: object) -> tuple[int, ...]:
    """Candidate bitwidths as a descending tuple of distinct ints in [1, 31]."""
    ok = (
        isinstance(candidates, Sequence)
        and not isinstance(candidates, str)
        and len(candidates) >= 1
        and all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c < FULL_PRECISION_BITS
            for c in candidates
        )
        and len(set(candidates)) == len(candidates)
    )
    if not ok:
        raise ValueError(
            f"{owner}: 'candidates' must be a non-empty sequence of distinct ints in [1, 31], "
            f"got {candidates!r}."
        )
    return tuple(sorted(candidates, reverse=True))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- layers
class QuantLayer(nn.Module):
    """What :class:`QuantConv2d` and :class:`QuantLinear` share: modes, bits, DBPs.

    State
    -----
    ``bits`` (buffer): the bitwidth in ``"fixed"`` mode. ``rung`` (buffer): the ladder position
    in ``"search"`` mode. ``theta`` (parameter): the DBP, ``beta = sigmoid(theta)``
    (``dbp_param="sigmoid"``) or ``clamp(theta, 0, 1)`` (``"clamp"``). ``interp_bits``
    (parameter): the continuous bitwidth of the ``"interp"`` mode.

    Plain attributes set by the search: ``estimator``, ``dbp_param``, ``tau``, ``generator``.
    ``quantize_input``: quantize the layer's input at ``act_bits`` (not for the first layer,
    whose input is the image).
    """

    candidates: tuple[int, ...]
    mode: str
    weight: nn.Parameter

    def __init__(
        self,
        *args,
        candidates: Sequence[int] = (8, 7, 6, 5, 4, 3, 2, 1),
        binary_mode: str = "sign_mean",
        act_bits: int = FULL_PRECISION_BITS,
        quantize_input: bool = True,
        **kwargs,
    ):
        # the nn layer's own arguments go on to it (QuantLayer comes first in the bases)
        super().__init__(*args, **kwargs)
        owner = type(self).__name__
        self.candidates = check_candidates(owner, candidates)
        check_param(owner, "binary_mode", binary_mode, Options(BINARY_MODES))
        check_param(owner, "act_bits", act_bits, Interval(int, 1, FULL_PRECISION_BITS))
        self.binary_mode = binary_mode
        self.act_bits = act_bits
        self.quantize_input = quantize_input
        self.mode = "fp"
        self.estimator = "gumbel_st"
        self.dbp_param = "sigmoid"
        self.tau = 1.0
        self.generator: torch.Generator | None = None
        self.register_buffer("bits", torch.tensor(FULL_PRECISION_BITS))
        self.register_buffer("rung", torch.tensor(0))
        self.theta = nn.Parameter(torch.tensor(0.0))
        self.interp_bits = nn.Parameter(torch.tensor(float(self.candidates[0])))

    # ----------------------------------------------------------------- bitwidth state
    @property
    def num_weights(self) -> int:
        """``n_l``, the number of weights this layer quantizes (biases stay in float32)."""
        return self.weight.numel()

    @property
    def pair(self) -> tuple[int, int]:
        """``(b_hi, b_lo)`` on the current rung; the lowest candidate pairs with itself."""
        r = int(self.rung)
        last = len(self.candidates) - 1
        return self.candidates[min(r, last)], self.candidates[min(r + 1, last)]

    def beta(self) -> torch.Tensor:
        """``beta = P(use b_hi)``: ``sigmoid(theta)`` or ``clamp(theta, 0, 1)``."""
        if self.dbp_param == "clamp":
            return self.theta.clamp(0, 1)
        return torch.sigmoid(self.theta)

    def set_beta(self, beta: float) -> None:
        """Set the DBP to ``beta`` (``theta = logit(beta)`` for the sigmoid parametrisation)."""
        with torch.no_grad():
            if self.dbp_param == "clamp":
                self.theta.fill_(beta)
            else:
                self.theta.fill_(math.log(beta) - math.log1p(-beta) if 0 < beta < 1 else
                                 math.copysign(math.inf, beta - 0.5))

    def expected_bits(self) -> torch.Tensor:
        """``E[b_l]``: ``beta b_hi + (1 - beta) b_lo`` in search mode (differentiable in the
        DBP), the clamped continuous bitwidth in interp mode, the fixed bits otherwise."""
        if self.mode == "search":
            hi, lo = self.pair
            beta = self.beta()
            return beta * hi + (1 - beta) * lo
        if self.mode == "interp":
            return self.interp_bits.clamp(min(self.candidates), max(self.candidates))
        return self.bits.to(self.weight.dtype)

    def final_bits(self, threshold: float = 0.5) -> int:
        """The bitwidth this layer would be exported with: search, ``b_hi if beta >= threshold
        else b_lo``; interp, ``round(b)``; fixed, its bits; fp, 32."""
        if self.mode == "search":
            hi, lo = self.pair
            return hi if float(self.beta().detach()) >= threshold else lo
        if self.mode == "interp":
            return int(round(float(self.expected_bits().detach())))
        return int(self.bits)

    # ----------------------------------------------------------------- forward
    def quantized_weight(self) -> torch.Tensor:
        """``w_q`` of the current mode (a fresh stochastic draw in search mode when training;
        in evaluation the search mode uses the bitwidth :meth:`final_bits` would export)."""
        w = self.weight
        if self.mode == "fp":
            return w
        if self.mode == "fixed":
            return quantize_weight(w, int(self.bits), self.binary_mode)
        if self.mode == "interp":
            return interpolated_weight(
                w, self.expected_bits(), max_bits=max(self.candidates),
                binary_mode=self.binary_mode,
            )
        hi, lo = self.pair
        if not self.training:
            return quantize_weight(w, self.final_bits(), self.binary_mode)
        beta = self.beta()
        logit = self.theta if self.dbp_param == "sigmoid" else None
        m = stochastic_mask(beta, estimator=self.estimator, tau=self.tau,
                            generator=self.generator, logit=logit)
        return mixed_weight(m, *quantize_weight_pair(w, hi, lo, self.binary_mode))

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "fp" or not self.quantize_input:
            return x
        return act_quant(x, self.act_bits)


class QuantConv2d(QuantLayer, nn.Conv2d):
    """``nn.Conv2d`` whose forward uses :meth:`QuantLayer.quantized_weight`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)


class QuantLinear(QuantLayer, nn.Linear):
    """``nn.Linear`` whose forward uses :meth:`QuantLayer.quantized_weight`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)


# --------------------------------------------------------------------------- whole models
def quantize_model(
    model: nn.Module,
    *,
    candidates: Sequence[int] = (8, 7, 6, 5, 4, 3, 2, 1),
    binary_mode: str = "sign_mean",
    act_bits: int = FULL_PRECISION_BITS,
    quantize_first_last: bool = True,
) -> nn.Module:
    """A copy of ``model`` with every ``Conv2d`` and ``Linear`` replaced by its quantized
    version (same weights, mode ``"fp"``); ``model`` itself is not changed.

    Parameters
    ----------
    candidates : sequence of int
        Bitwidths the search may choose (spec default 8..1).
    binary_mode : {"sign_mean", "formula"}
    act_bits : int, default 32
        Input activations of every quantized layer but the first are quantized at this
        bitwidth (32: not quantized, the spec's CPU book setting).
    quantize_first_last : bool, default True
        False keeps the first and last layers in float32 (they are then not quantized layers
        and do not count in the average bitwidth).
    """
    owner = "quantize_model"
    check_candidates(owner, candidates)
    check_param(owner, "binary_mode", binary_mode, Options(BINARY_MODES))
    check_param(owner, "act_bits", act_bits, Interval(int, 1, FULL_PRECISION_BITS))
    check_param(owner, "quantize_first_last", quantize_first_last, Options((True, False)))
    out = copy.deepcopy(model)
    names = [n for n, m in out.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    if not names:
        raise ValueError(f"{owner}: 'model' has no Conv2d or Linear layer to quantize.")
    if not quantize_first_last:
        names = names[1:-1]
    first = names[0] if names else None
    for name in names:
        parent, attr = _parent(out, name)
        old = getattr(parent, attr)
        options = {"candidates": candidates, "binary_mode": binary_mode, "act_bits": act_bits,
                   "quantize_input": name != first or not quantize_first_last}
        if isinstance(old, nn.Conv2d):
            new: nn.Module = QuantConv2d(
                old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                padding=old.padding, dilation=old.dilation, groups=old.groups,
                bias=old.bias is not None, padding_mode=old.padding_mode, **options,
            )
        else:
            new = QuantLinear(old.in_features, old.out_features, bias=old.bias is not None,
                              **options)
        new.load_state_dict(old.state_dict(), strict=False)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        new.train(old.training)
        setattr(parent, attr, new)
    return out


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parts = name.split(".")
    parent = model
    for part in parts[:-1]:
        parent = getattr(parent, part)
    return parent, parts[-1]


def quant_layers(model: nn.Module) -> dict[str, QuantLayer]:
    """The quantized layers of ``model`` by module name, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLayer)}


def set_mode(
    model: nn.Module, mode: str, *, bits: int | Mapping[str, int] | None = None
) -> nn.Module:
    """Put every quantized layer in ``mode``; ``"fixed"`` needs ``bits`` (one int, or a
    strategy ``{layer: bits}`` naming every quantized layer)."""
    check_param("set_mode", "mode", mode, Options(MODES))
    layers = quant_layers(model)
    if mode == "fixed":
        if bits is None:
            raise ValueError("set_mode: mode 'fixed' needs 'bits' (an int or {layer: bits}).")
        strategy = {n: bits for n in layers} if isinstance(bits, int) else dict(bits)
        missing = sorted(set(layers) - set(strategy))
        unknown = sorted(set(strategy) - set(layers))
        if missing or unknown:
            raise ValueError(
                f"set_mode: 'bits' must name every quantized layer; missing {missing}, "
                f"unknown {unknown}."
            )
        for name, layer in layers.items():
            b = strategy[name]
            check_param("set_mode", f"bits[{name!r}]", b, Interval(int, 1, FULL_PRECISION_BITS))
            layer.bits.fill_(b)
    for layer in layers.values():
        layer.mode = mode
    return model


def _is_bit_parameter(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in ("theta", "interp_bits")


def bit_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The bitwidth parameters (SDQ's DBPs ``theta`` and the interpolation's ``b``)."""
    return (p for n, p in model.named_parameters() if _is_bit_parameter(n))


def weight_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Every parameter except the bitwidth parameters (weights, biases, norm layers)."""
    return (p for n, p in model.named_parameters() if not _is_bit_parameter(n))


@torch.no_grad()
def deployable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the plain architecture with every quantized layer's weight replaced by
    its quantized values ``Q_b(w)`` at the layer's final bitwidth.

    Loads into the unquantized model (``SmallCNN(...).load_state_dict``) and then computes the
    quantized model's evaluation forward exactly when activations are not quantized
    (``act_bits = 32``). The bitwidth bookkeeping (``theta``, ``rung``, ``bits``,
    ``interp_bits``) is left out.
    """
    layers = quant_layers(model)
    quantized = {
        f"{n}.weight": quantize_weight(layer.weight, layer.final_bits(), layer.binary_mode)
        for n, layer in layers.items()
    }
    layer_names = set(layers)
    state = {}
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in layer_names and leaf in _EXTRA_KEYS:
            continue
        state[key] = quantized.get(key, value).detach().clone()
    return state
