"""Geometry and image helpers shared by the synthetic generators and the segmentation views.

Boxes from masks (:func:`tight_boxes`, :func:`masks_to_boxes`, :func:`boxes_with_margin`),
masks and labels from boxes and masks (:func:`box_masks`, :func:`image_level_targets`), soft
(partial-volume) coverage (:func:`soft_inside`) and per-image Gaussian blurs
(:func:`gaussian_kernels`, :func:`gaussian_blur`).

A leaf module: it imports nothing else from :mod:`fedlib.data`, so every generator and view can
import it without an import circle. Boxes are ``(x0, y0, x1, y1)`` in pixels with exclusive
ends (``x0`` the first foreground column, ``x1`` one past the last; likewise rows for ``y``);
an empty mask has the empty box ``(0, 0, 0, 0)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedlib._validation import Interval, check_param

__all__ = [
    "box_masks",
    "boxes_with_margin",
    "check_margin",
    "gaussian_blur",
    "gaussian_kernels",
    "image_level_targets",
    "masks_to_boxes",
    "soft_inside",
    "tight_boxes",
]


# --------------------------------------------------------------------------- boxes


def _as_mask_array(owner: str, masks) -> np.ndarray:
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim == 4:
        if masks.shape[1] != 1:
            raise ValueError(
                f"{owner}: 'masks' must have shape (N, 1, H, W) or (N, H, W), got {masks.shape}."
            )
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(
            f"{owner}: 'masks' must have shape (N, 1, H, W) or (N, H, W), got {masks.shape}."
        )
    return masks > 0.5


def tight_boxes(masks) -> np.ndarray:
    """The tight bounding box of every mask, ``(x0, y0, x1, y1)`` inclusive-exclusive.

    ``x0`` is the first column holding a foreground pixel, ``x1`` one past the last (likewise
    rows for ``y``). An empty mask gets the empty box ``(0, 0, 0, 0)``.

    Parameters
    ----------
    masks : array or Tensor, shape (N, 1, H, W) or (N, H, W); foreground = value > 0.5

    Returns
    -------
    ndarray of int64, shape (N, 4)
    """
    m = _as_mask_array("tight_boxes", masks)
    n, h, w = m.shape
    cols = m.any(axis=1)  # (N, W)
    rows = m.any(axis=2)  # (N, H)
    present = cols.any(axis=1)
    x0 = np.argmax(cols, axis=1)
    x1 = w - np.argmax(cols[:, ::-1], axis=1)
    y0 = np.argmax(rows, axis=1)
    y1 = h - np.argmax(rows[:, ::-1], axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)
    boxes[~present] = 0
    return boxes


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """:func:`tight_boxes` of a mask tensor (N, 1, H, W), as an int64 tensor (N, 4).

    An empty mask gets ``(0, 0, 0, 0)``.
    """
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(
            f"masks_to_boxes: 'masks' must have shape (N, 1, H, W), got {tuple(masks.shape)}."
        )
    return torch.from_numpy(tight_boxes(masks))


def check_margin(owner: str, margin) -> tuple[int, int]:
    """Validate a box margin: an int ``m >= 0`` (-> ``(m, m)``) or a pair ``0 <= lo <= hi``."""
    if isinstance(margin, int | np.integer) and not isinstance(margin, bool):
        lo = hi = int(margin)
    elif (
        isinstance(margin, tuple | list)
        and len(margin) == 2
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in margin)
    ):
        lo, hi = int(margin[0]), int(margin[1])
    else:
        raise TypeError(
            f"{owner}: 'margin' must be an int >= 0 or a pair (lo, hi) of ints, got {margin!r}."
        )
    if lo < 0 or hi < lo:
        raise ValueError(f"{owner}: 'margin' must satisfy 0 <= lo <= hi, got {margin!r}.")
    return lo, hi


def boxes_with_margin(
    masks,
    margin: tuple[int, int] | int = (1, 9),
    *,
    seed: int = 0,
) -> np.ndarray:
    """Boxes as FedMix synthesises them: the tight box plus a random margin per side, clamped.

    For each side independently ``m ~ U{lo, ..., hi}`` pixels (``margin=(lo, hi)``; an int
    gives a fixed margin, FedMix's first version used 2), then
    ``x0' = max(x0 - m, 0)``, ``x1' = min(x1 + m, W)`` and likewise for ``y``. An empty mask
    keeps the empty box ``(0, 0, 0, 0)``.

    Reference: Wicaksana et al., "FedMix: Mixed supervised federated learning for medical image
    segmentation", IEEE TMI 2023, arXiv:2205.01840.

    Parameters
    ----------
    masks : array or Tensor, (N, 1, H, W) or (N, H, W)
    margin : (int, int) with 0 <= lo <= hi, or int >= 0
        In pixels of ``masks``. FedMix draws 1-9 px at 224 px.
    seed : int >= 0

    Returns
    -------
    ndarray of int64, shape (N, 4): ``(x0, y0, x1, y1)`` inclusive-exclusive, containing the
    tight box.
    """
    owner = "boxes_with_margin"
    lo, hi = check_margin(owner, margin)
    check_param(owner, "seed", seed, Interval(int, 0, None, closed="left"))
    m = _as_mask_array(owner, masks)
    n, h, w = m.shape
    tight = tight_boxes(m)
    rng = np.random.default_rng(seed)
    pad = rng.integers(lo, hi + 1, size=(n, 4))
    boxes = np.stack(
        [
            np.maximum(tight[:, 0] - pad[:, 0], 0),
            np.maximum(tight[:, 1] - pad[:, 1], 0),
            np.minimum(tight[:, 2] + pad[:, 2], w),
            np.minimum(tight[:, 3] + pad[:, 3], h),
        ],
        axis=1,
    ).astype(np.int64)
    empty = (tight[:, 2] <= tight[:, 0]) | (tight[:, 3] <= tight[:, 1])
    boxes[empty] = 0
    return boxes


def box_masks(boxes, height: int, width: int) -> torch.Tensor:
    """Filled boxes as masks: ``M[i, 0, y, x] = 1`` iff ``y0 <= y < y1`` and ``x0 <= x < x1``.

    Returns a float32 tensor of shape (N, 1, height, width).
    """
    b = torch.as_tensor(np.asarray(boxes), dtype=torch.int64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"box_masks: 'boxes' must have shape (N, 4), got {tuple(b.shape)}.")
    ys = torch.arange(height).view(1, height, 1)
    xs = torch.arange(width).view(1, 1, width)
    inside = (
        (ys >= b[:, 1, None, None])
        & (ys < b[:, 3, None, None])
        & (xs >= b[:, 0, None, None])
        & (xs < b[:, 2, None, None])
    )
    return inside.unsqueeze(1).to(torch.float32)


def image_level_targets(masks) -> torch.Tensor:
    """Image-level labels from masks: which segmentation classes are present.

    ``t[i, c] = 1`` iff channel ``c`` of mask ``i`` has a foreground pixel; shape (N, C).
    With one channel (lesion vs background) every lesion image gets ``[1.]``.
    """
    m = torch.as_tensor(masks)
    if m.ndim != 4:
        raise ValueError(
            f"image_level_targets: 'masks' must have shape (N, C, H, W), got {tuple(m.shape)}."
        )
    return (m > 0.5).flatten(2).any(dim=2).to(torch.float32)


# --------------------------------------------------------------------------- soft masks, blurs


def soft_inside(signed_px: np.ndarray) -> np.ndarray:
    """Partial-volume coverage of a pixel from its signed distance ``d`` to a boundary.

    ``clip(1/2 - d, 0, 1)`` with ``d`` in pixels, negative inside: 1 well inside, 0 well
    outside, 1/2 on the boundary, linear over the one pixel that straddles it.
    """
    out = np.subtract(0.5, signed_px)
    np.maximum(out, 0.0, out=out)
    return np.minimum(out, 1.0, out=out)


def gaussian_kernels(sigma_px: np.ndarray) -> np.ndarray:
    """Normalised 1-D Gaussian kernels, one row per sigma, radius ``ceil(3 * max sigma)``.

    ``k_i[t] = exp(-t^2 / (2 max(sigma_i, 0.05)^2)) / Z_i`` for ``t = -r..r``; shape
    (N, 2r + 1); a sigma below 0.05 px gives (nearly) the identity kernel.
    """
    sigma = np.asarray(sigma_px, dtype=np.float32).reshape(-1)
    radius = int(np.ceil(3 * float(sigma.max()))) if sigma.size else 0
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (taps[None] / np.maximum(sigma[:, None], 0.05)) ** 2)
    return kernel / kernel.sum(axis=1, keepdims=True)


def gaussian_blur(images: np.ndarray, sigma_px) -> np.ndarray:
    """Blur each image of a (N, H, W) stack with its own isotropic Gaussian.

    A separable kernel from :func:`gaussian_kernels` per image (one grouped torch convolution
    per axis, zero padding). ``sigma_px`` has shape (N,) or broadcasts to it.
    """
    n, h, w = images.shape
    sigma = np.broadcast_to(np.asarray(sigma_px, dtype=np.float32), (n,))
    kernel = gaussian_kernels(sigma)
    radius = kernel.shape[1] // 2
    if radius == 0:
        return images
    k = torch.from_numpy(kernel)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[None]
    x = F.conv2d(F.pad(x, (0, 0, radius, radius)), k[:, None, :, None], groups=n)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0)), k[:, None, None, :], groups=n)
    return x[0].numpy()
