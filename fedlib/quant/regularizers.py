"""Bin regularization (SDQ's stage 2): pull each layer's weights onto its quantization levels.

For a layer at bitwidth ``b`` with normalised weights ``w_n in [0, 1]`` (DoReFa's
:func:`~fedlib.quant.quantizers.normalized_weight`), levels ``q_k = k / (2^b - 1)`` and bins
``S_k = {i : round((2^b - 1) w_n,i) = k}`` (membership is constant in the backward pass)::

    L_BR,l = sum_{k: S_k non-empty} [ (mean(S_k) - q_k)^2 + var(S_k) ]      (biased variance)
    L_EBR  = sum_l L_BR,l

The mean term moves each bin's centre onto its level, the variance term tightens the bin: a
layer whose weights all sit on levels has ``L_BR = 0`` and loses nothing when quantized.

[O] SDQ's "entropy-aware" modification (paper Eq. 10) is not in the public material. The default
``mode="br"`` is the base Bin Regularization applied per layer at the layer's own bitwidth; the
other modes are the spec's alternatives (§5):

* ``"occupancy"``: ``sum_k p_k [(mean - q_k)^2 + var]``, ``p_k = |S_k| / n_l``: equals the
  layer's quantization MSE ``mean_i (w_n,i - q_k(i))^2``;
* ``"per_bin_norm"``: ``L_BR,l / 2^b`` (balances precisions);
* ``"entropy_bonus"``: ``L_BR,l - gamma_H H(p) / b`` with ``H`` in bits. With hard bin
  membership ``H(p)`` is constant in the backward pass: the bonus changes the value, not the
  gradient.

One-bit layers use the same levels {0, 1} on ``w_n`` (weights pushed to equal magnitudes, which
is what ``sign(w) mean|w|`` represents without error).

References
----------
Han, Li, Liu, Tian, Shan, "Improving low-precision network quantization via bin
regularization", ICCV 2021.
Huang et al., "SDQ: Stochastic Differentiable Quantization with Mixed Precision", ICML 2022,
arXiv:2206.04459 (Sec. 3.3, entropy-aware bin regularization).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from fedlib._validation import Interval, Options, check_param
from fedlib.quant.layers import QuantLayer
from fedlib.quant.quantizers import FULL_PRECISION_BITS, normalized_weight

__all__ = ["EBR_MODES", "bin_regularizer", "ebr_loss"]

EBR_MODES = ("br", "occupancy", "per_bin_norm", "entropy_bonus")


def bin_regularizer(
    w: torch.Tensor, bits: int, mode: str = "br", *, gamma_h: float = 0.01
) -> torch.Tensor:
    """``L_BR`` of one weight tensor at ``bits`` (see the module docstring for the modes).

    Parameters
    ----------
    w : Tensor, any shape
        Latent (full-precision) weights.
    bits : int in [1, 31]
    mode : {"br", "occupancy", "per_bin_norm", "entropy_bonus"}
    gamma_h : float >= 0, default 0.01
        [O] Weight of the entropy bonus (mode "entropy_bonus" only; the spec gives no value).

    Returns
    -------
    Tensor, shape (): differentiable in ``w``.
    """
    owner = "bin_regularizer"
    check_param(owner, "bits", bits, Interval(int, 1, FULL_PRECISION_BITS - 1))
    check_param(owner, "mode", mode, Options(EBR_MODES))
    check_param(owner, "gamma_h", gamma_h, Interval(float, 0, None, closed="left"))
    levels = 2**bits - 1
    w_n = normalized_weight(w).flatten()
    index = torch.round(levels * w_n.detach()).long()
    count = torch.bincount(index, minlength=levels + 1).to(w_n.dtype)
    present = count > 0
    safe = count.clamp_min(1)
    mean = torch.zeros(levels + 1, dtype=w_n.dtype, device=w_n.device).index_add(0, index, w_n)
    mean = mean / safe
    centred = (w_n - mean[index]) ** 2
    var = torch.zeros_like(mean).index_add(0, index, centred) / safe
    target = torch.arange(levels + 1, dtype=w_n.dtype, device=w_n.device) / levels
    per_bin = ((mean - target) ** 2 + var) * present
    if mode == "occupancy":
        return (per_bin * count).sum() / w_n.numel()
    value = per_bin.sum()
    if mode == "per_bin_norm":
        return value / 2**bits
    if mode == "entropy_bonus":
        p = count[present] / w_n.numel()
        entropy = -(p * torch.log2(p)).sum()
        return value - gamma_h * entropy / bits
    return value


def ebr_loss(
    layers: Iterable[QuantLayer], mode: str = "br", *, gamma_h: float = 0.01
) -> torch.Tensor:
    """``L_EBR = sum_l L_BR,l`` over quantized layers, each at its own bitwidth
    (:meth:`QuantLayer.final_bits`); full-precision layers (32 bits) contribute nothing."""
    total: torch.Tensor | None = None
    for layer in layers:
        bits = layer.final_bits()
        if bits >= FULL_PRECISION_BITS:
            continue
        term = bin_regularizer(layer.weight, bits, mode, gamma_h=gamma_h)
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return total
