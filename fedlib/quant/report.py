"""What a quantization strategy costs: bits per layer, average bits, bytes, compression, BitOps.

Definitions (SDQ spec §4; ``n_l`` weights and ``MAC_l`` multiply-accumulates per example in
layer ``l``, weight bitwidth ``b_l``, activation bitwidth ``b_a``)::

    average bits      b_bar = sum_l n_l b_l / sum_l n_l          (parameter-weighted)
    compression       32 / b_bar                                 (weights only, as the paper)
    BitOps            sum_l MAC_l b_l b_a                         (per example)
    size in bytes     sum_l ceil(n_l b_l / 8) + 4 (one float32 scale per quantized layer)
                      + 4 x every other floating-point entry of the state dict

[O] The byte count is ours: weights bit-packed per layer, one float32 scale per layer (DoReFa
levels are fixed in [-1, 1]; a deployed layer needs one scale to undo the normalisation), and
biases, normalisation parameters and running statistics kept in float32. Integer buffers
(``num_batches_tracked``) and the search's bookkeeping are not part of a deployed model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

from fedlib.quant.layers import quant_layers
from fedlib.quant.quantizers import FULL_PRECISION_BITS
from fedlib.quant.regularizers import bin_regularizer

__all__ = [
    "average_bits",
    "compression_ratio",
    "count_macs",
    "layer_table",
    "model_size_bytes",
    "quant_summary",
    "quantization_mse",
]

_BOOKKEEPING = ("theta", "interp_bits", "rung", "bits")


def average_bits(bits: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """``b_bar = sum_l w_l b_l / sum_l w_l`` (``weights``: the ``n_l``, or the ``MAC_l`` for a
    BitOps-weighted average).

    >>> average_bits({"a": 8, "b": 2}, {"a": 100, "b": 900})
    2.6
    """
    total = sum(weights[name] for name in bits)
    if total <= 0:
        raise ValueError("average_bits: the layers' weights must sum to a positive number.")
    return sum(weights[name] * b for name, b in bits.items()) / total


def compression_ratio(avg_bits: float) -> float:
    """Weight compression against float32, ``32 / b_bar`` (2.6 bits: 12.31x)."""
    return FULL_PRECISION_BITS / avg_bits


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per example of every quantized layer, from one forward pass.

    Conv2d: ``H_out W_out C_out (C_in / groups) k_h k_w``; Linear: ``in x out`` per row (times
    the number of rows for inputs with extra leading dimensions).
    """
    macs: dict[str, int] = {}
    hooks = []
    for name, layer in quant_layers(model).items():

        def hook(module, inputs, output, name=name):
            per_example = output[0].numel() if output.ndim > 1 else output.numel()
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
            else:
                fan_in = module.in_features
            macs[name] = int(per_example * fan_in)

        hooks.append(layer.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(example[:1])
    finally:
        model.train(was_training)
        for handle in hooks:
            handle.remove()
    return macs


def model_size_bytes(model: nn.Module, bits: Mapping[str, int] | None = None) -> int:
    """Bytes of the deployed model (see the module docstring); ``bits=None`` uses each layer's
    :meth:`QuantLayer.final_bits`. A model without quantized layers gives its float32 size."""
    layers = quant_layers(model)
    bits = {n: layer.final_bits() for n, layer in layers.items()} if bits is None else bits
    total = 0
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in layers and leaf in _BOOKKEEPING:
            continue
        if not value.is_floating_point():
            continue
        if owner in layers and leaf == "weight" and bits[owner] < FULL_PRECISION_BITS:
            total += math.ceil(value.numel() * bits[owner] / 8) + 4
        else:
            total += 4 * value.numel()
    return total


def layer_table(
    model: nn.Module, example: torch.Tensor | None = None, *, act_bits: int | None = None
) -> pd.DataFrame:
    """One row per quantized layer: name, kind, weights ``n_l``, bits, and with an ``example``
    input also MACs and BitOps (``act_bits`` defaults to the layers' own)."""
    layers = quant_layers(model)
    macs = count_macs(model, example) if example is not None else {}
    rows = []
    for name, layer in layers.items():
        b = layer.final_bits()
        row = {"layer": name, "kind": type(layer).__name__.removeprefix("Quant"),
               "weights": layer.num_weights, "bits": b}
        if macs:
            a = layer.act_bits if act_bits is None else act_bits
            a = a if layer.quantize_input else FULL_PRECISION_BITS
            row.update(macs=macs[name], bitops=macs[name] * b * a)
        rows.append(row)
    return pd.DataFrame(rows)


def quant_summary(model: nn.Module, example: torch.Tensor | None = None) -> dict[str, float]:
    """Average bits, compression, bytes (quantized and float32) and, with an ``example``,
    BitOps (quantized and float32) of a model's current strategy."""
    table = layer_table(model, example)
    if table.empty:
        raise ValueError("quant_summary: 'model' has no quantized layer.")
    bits = dict(zip(table["layer"], table["bits"], strict=True))
    avg = average_bits(bits, dict(zip(table["layer"], table["weights"], strict=True)))
    fp = model_size_bytes(model, {name: FULL_PRECISION_BITS for name in bits})
    size = model_size_bytes(model, bits)
    out = {
        "average_bits": avg,
        "compression_ratio": compression_ratio(avg),
        "size_bytes": size,
        "fp32_size_bytes": fp,
        "model_compression_ratio": fp / size,
    }
    if "bitops" in table:
        out["bitops"] = float(table["bitops"].sum())
        out["fp32_bitops"] = float((table["macs"] * FULL_PRECISION_BITS**2).sum())
    return out



@torch.no_grad()
def quantization_mse(model: nn.Module) -> dict[str, float]:
    """Per quantized layer, the mean squared distance of its normalised weights to their
    quantization levels, ``mean_i (w_n,i - q_k(i))^2`` at the layer's bitwidth (the
    ``"occupancy"`` bin regularizer); 0 for layers in float32. What the bin regularizer lowers.
    """
    out = {}
    for name, layer in quant_layers(model).items():
        bits = layer.final_bits()
        out[name] = (0.0 if bits >= FULL_PRECISION_BITS
                     else float(bin_regularizer(layer.weight, bits, "occupancy")))
    return out
