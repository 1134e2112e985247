"""Uniform quantizers with straight-through gradients (the building blocks of SDQ).

Weights use the DoReFa form: squash with ``tanh``, map to ``[0, 1]``, round to ``2^b`` levels and
map back to ``[-1, 1]``. One bit is the sign times the mean magnitude. Rounding is made
trainable by the straight-through estimator (STE): the forward pass rounds, the backward pass
treats rounding as the identity.

Notation (SDQ spec §2)::

    w_n    = tanh(w) / (2 max|tanh(w)|) + 1/2                  in [0, 1]
    Q_b(w) = 2 round((2^b - 1) w_n) / (2^b - 1) - 1            b >= 2, levels -1 + 2k/(2^b - 1)
    Q_1(w) = sign(w) mean|w|                                   sign(0) := +1   ("sign_mean")
    round_ste(x) = x + (round(x) - x).detach()

References
----------
Zhou, Wu, Ni, Zhou, Wen, Zou, "DoReFa-Net: Training low bitwidth convolutional neural networks
with low bitwidth gradients", arXiv:1606.06160 (2016).
Bengio, Léonard, Courville, "Estimating or propagating gradients through stochastic neurons for
conditional computation", arXiv:1308.3432 (2013) (the straight-through estimator).
Huang et al., "SDQ: Stochastic Differentiable Quantization with Mixed Precision", ICML 2022,
arXiv:2206.04459.
"""

from __future__ import annotations

import torch

from fedlib._validation import Interval, Options, check_param

__all__ = [
    "BINARY_MODES",
    "FULL_PRECISION_BITS",
    "act_quant",
    "binary_weight",
    "dorefa_weight",
    "normalized_weight",
    "quantize_weight",
    "quantize_weight_pair",
    "round_ste",
]

BINARY_MODES = ("sign_mean", "formula")
FULL_PRECISION_BITS = 32
"""A bitwidth of 32 means "not quantized" (float32), for weights and activations alike."""

_BITS = Interval(int, 1, FULL_PRECISION_BITS)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer in the forward pass; gradient exactly 1 in the backward pass.

    ``round_ste(x) = x + (round(x) - x).detach()``, computed so that the forward value is
    exactly ``round(x)``. Ties round half to even (``torch.round``).
    """
    return _straight_through(torch.round(x), x)


def normalized_weight(w: torch.Tensor) -> torch.Tensor:
    """DoReFa's weight normalisation to ``[0, 1]``: ``w_n = tanh(w) / (2 max|tanh(w)|) + 1/2``.

    The extreme weight lands on 0 or 1. An all-zero tensor maps to 1/2 (the maximum is
    floored at the smallest positive float, so nothing divides by zero).
    """
    t = torch.tanh(w)
    peak = t.abs().max().clamp_min(torch.finfo(t.dtype).tiny)
    return t / (2 * peak) + 0.5


def dorefa_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The b-bit DoReFa weight quantizer, b >= 1, with STE rounding.

    ``Q_b(w) = 2 round_ste((2^b - 1) w_n) / (2^b - 1) - 1``: ``2^b`` levels
    ``-1 + 2k / (2^b - 1)``, k = 0..2^b - 1, all in ``[-1, 1]``. At b = 1 this is the
    ``binary_mode="formula"`` case: the levels are -1 and +1.

    Parameters
    ----------
    w : Tensor, any shape
    bits : int in [1, 31]

    Examples
    --------
    >>> w = torch.tensor([-1.0, -0.2, 0.1, 0.5, 2.0])
    >>> (dorefa_weight(w, 2) * 3).round().tolist()
    [-3.0, -1.0, 1.0, 1.0, 3.0]
    """
    check_param("dorefa_weight", "bits", bits, Interval(int, 1, FULL_PRECISION_BITS - 1))
    return _dorefa_from_normalized(normalized_weight(w), bits)


def _dorefa_from_normalized(w_n: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2**bits - 1
    return 2 * round_ste(levels * w_n) / levels - 1


def binary_weight(w: torch.Tensor) -> torch.Tensor:
    """One-bit weights, ``Q_1(w) = sign(w) mean|w|`` with ``sign(0) = +1``.

    The gradient is straight-through, ``dQ_1/dw = 1``: the sign's zero derivative is replaced
    by the identity, as in DoReFa's binary case. [O] The mean magnitude is treated as a constant
    in the backward pass (the spec does not say).
    """
    scale = w.detach().abs().mean()
    sign = torch.where(w.detach() >= 0, 1.0, -1.0).to(w.dtype)
    return _straight_through(sign * scale, w)


def _straight_through(value: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, gradient of the identity in ``w`` in the backward pass.

    Written ``value.detach() + (w - w.detach())``: the second term is exactly 0, so the forward
    value is ``value`` bit for bit (``w + (value - w).detach()`` can be off by one ulp).
    """
    return value.detach() + (w - w.detach())


def quantize_weight(w: torch.Tensor, bits: int, binary_mode: str = "sign_mean") -> torch.Tensor:
    """``Q_b(w)``: the weight quantizer used by every quantized layer.

    ``bits >= 2``: :func:`dorefa_weight`; ``bits == 1``: :func:`binary_weight`
    (``binary_mode="sign_mean"``, default) or :func:`dorefa_weight` at b = 1 (``"formula"``,
    levels ±1); ``bits == 32``: ``w`` unchanged.

    [O] ``binary_mode`` is ours (the spec's option): the paper does not state its 1-bit form.
    """
    check_param("quantize_weight", "bits", bits, _BITS)
    check_param("quantize_weight", "binary_mode", binary_mode, Options(BINARY_MODES))
    if bits == FULL_PRECISION_BITS:
        return w
    if bits == 1 and binary_mode == "sign_mean":
        return binary_weight(w)
    return dorefa_weight(w, bits)


def quantize_weight_pair(
    w: torch.Tensor, bits_hi: int, bits_lo: int, binary_mode: str = "sign_mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q_hi(w), Q_lo(w))``, equal to two :func:`quantize_weight` calls but normalising ``w``
    once (SDQ's search and the interpolation baseline need both every step)."""
    if bits_hi < 2 or bits_lo < 2 or max(bits_hi, bits_lo) >= FULL_PRECISION_BITS:
        return (quantize_weight(w, bits_hi, binary_mode), quantize_weight(w, bits_lo, binary_mode))
    w_n = normalized_weight(w)
    return _dorefa_from_normalized(w_n, bits_hi), _dorefa_from_normalized(w_n, bits_lo)


def act_quant(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Activation quantizer at a fixed bitwidth: clip to ``[0, 1]``, ``2^b`` uniform levels, STE.

    ``A_b(x) = round_ste((2^b - 1) clip(x, 0, 1)) / (2^b - 1)``; ``bits == 32`` returns ``x``.
    The gradient is 1 inside ``[0, 1]`` and 0 outside (the clip's own gradient).
    """
    check_param("act_quant", "bits", bits, _BITS)
    if bits == FULL_PRECISION_BITS:
        return x
    levels = 2**bits - 1
    return round_ste(levels * x.clamp(0, 1)) / levels
