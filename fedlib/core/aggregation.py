"""Weighted aggregation of client arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def weighted_average(
    arrays: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    r"""Key-wise weighted mean ``w = \sum_k (n_k / \sum_j n_j) w_k`` (McMahan et al., 2017).

    Parameters
    ----------
    arrays : sequence of mappings with the same keys
    weights : sequence of non-negative numbers (e.g. numbers of examples), not all zero

    Returns
    -------
    dict of str to Tensor, in the dtype of the first client's arrays. The sum runs in float64
    so the result does not depend on the order of clients beyond rounding to the final dtype.
    """
    if len(arrays) == 0:
        raise ValueError("weighted_average: 'arrays' must hold at least one client's arrays.")
    if len(arrays) != len(weights):
        raise ValueError(f"weighted_average: got {len(arrays)} arrays but {len(weights)} weights.")
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(
            "weighted_average: 'weights' must be finite, >= 0 and not all zero, "
            f"got {list(weights)}."
        )
    w = w / w.sum()
    keys = list(arrays[0].keys())
    for i, a in enumerate(arrays[1:], start=1):
        if list(a.keys()) != keys:
            raise ValueError(f"weighted_average: client {i} sent keys that differ from client 0's.")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        first = arrays[0][key]
        acc = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
        for wk, a in zip(w, arrays, strict=True):
            acc += wk.item() * a[key].to(torch.float64)
        out[key] = acc.to(first.dtype)
    return out
