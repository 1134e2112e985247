"""Rendering mechanics shared by the procedural generators (SynthICH, SynthBUS, SynthDerm).

:func:`check_render_inputs` validates the ``(labels, sites)`` a renderer is asked for;
:func:`render_in_chunks` runs a renderer chunk by chunk, writes each chunk straight to its rows
of the output and derives the boxes from the masks. Chunks keep the working arrays of a chunk
small enough for the CPU caches and bound memory whatever the number of images.

Imports only the leaf :mod:`fedlib.data._geometry` from :mod:`fedlib.data`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedlib._validation import Interval, check_param
from fedlib.data._geometry import tight_boxes

__all__ = ["check_render_inputs", "render_in_chunks"]

ChunkRenderer = Callable[[slice | np.ndarray], tuple[np.ndarray | torch.Tensor, ...]]


def check_render_inputs(
    owner: str, labels, sites, image_size, difficulty, seed, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a renderer's inputs; return ``labels`` and ``sites`` as int64 arrays.

    ``labels``: 1-D integers in ``0..num_classes - 1``; ``sites``: 1-D integers >= 0, one per
    label; ``image_size`` an int in [16, 512], ``difficulty`` a float in [0, 1], ``seed`` an
    int >= 0. Tensors are accepted for ``labels`` and ``sites``.
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    sites = np.asarray(sites.cpu() if isinstance(sites, torch.Tensor) else sites)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(
            f"{owner}: 'labels' must be a 1-D integer array, got {labels.dtype} "
            f"with shape {labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{owner}: 'labels' must lie in 0..{num_classes - 1}, got values "
            f"{labels.min()}..{labels.max()}."
        )
    if sites.shape != labels.shape or (sites.size and not np.issubdtype(sites.dtype, np.integer)):
        raise ValueError(
            f"{owner}: 'sites' must be a 1-D integer array with one site per label "
            f"({labels.shape[0]}), got shape {sites.shape}."
        )
    if sites.size and sites.min() < 0:
        raise ValueError(f"{owner}: 'sites' must be >= 0, got {sites.min()}.")
    check_param(owner, "image_size", image_size, Interval(int, 16, 512))
    check_param(owner, "difficulty", difficulty, Interval(float, 0, 1))
    check_param(owner, "seed", seed, Interval(int, 0, None, closed="left"))
    return labels.astype(np.int64), sites.astype(np.int64)


def render_in_chunks(
    render_chunk: ChunkRenderer,
    num_images: int,
    image_size: int,
    *,
    channels: int = 1,
    order: np.ndarray | None = None,
    chunk_pixels: int = 2**17,
    min_chunk: int = 4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``num_images`` images chunk by chunk; return images, masks and tight boxes.

    Chunk ``j`` covers positions ``j B .. (j + 1) B - 1`` of ``order`` (default: the images in
    their own order), ``B = max(min_chunk, chunk_pixels // image_size**2)`` images.
    ``render_chunk(rows)`` renders the images ``rows`` (a slice when ``order`` is None, else
    the index array ``order[j B : (j + 1) B]``) and returns ``(images, masks)``: arrays or
    tensors of shape (m, C, S, S) and (m, 1, S, S), or (m, S, S) each when ``channels == 1``.
    Chunks are rendered in order, so a renderer that draws from one random stream sees the
    same draws in every run.

    Returns
    -------
    images : float32 Tensor (N, channels, S, S)
    masks : float32 Tensor (N, 1, S, S)
    boxes : int64 Tensor (N, 4), :func:`fedlib.data._geometry.tight_boxes` of the masks
    """
    n, s = num_images, image_size
    images = np.empty((n, channels, s, s), dtype=np.float32)
    masks = np.empty((n, 1, s, s), dtype=np.float32)
    step = max(min_chunk, chunk_pixels // (s * s))
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n)) if order is None else order[start : start + step]
        chunk_images, chunk_masks = render_chunk(rows)
        images[rows] = np.asarray(chunk_images).reshape(-1, channels, s, s)
        masks[rows] = np.asarray(chunk_masks).reshape(-1, 1, s, s)
    boxes = tight_boxes(masks)
    return torch.from_numpy(images), torch.from_numpy(masks), torch.from_numpy(boxes)
