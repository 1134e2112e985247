"""An image gallery as a plotly figure: a grid of images with their class, lesion outline and box.

Images are embedded as small PNG data URIs (one ``go.Image`` trace each), so a gallery of a
hundred 32 x 32 images stays well under a megabyte of HTML; larger images are shrunk for
display to at most ``max_display_size`` pixels per side.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from PIL import Image
from plotly.subplots import make_subplots

from fedlib._validation import Interval, check_param

__all__ = ["image_gallery_figure"]

_OWNER = "image_gallery_figure"
MASK_COLOUR = "#00e5ff"
BOX_COLOUR = "#ffd400"


def _as_numpy(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as err:  # pragma: no cover - exotic inputs
        raise TypeError(f"{_OWNER}: {name!r} must be an array or tensor, got {values!r}.") from err


def _images_hwc(images) -> np.ndarray:
    """(N, C, H, W) with C in {1, 3}, floats in [0, 1] -> (N, H, W, 3) uint8."""
    array = _as_numpy(images, "images")
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(
            f"{_OWNER}: 'images' must have shape (N, C, H, W) with C = 1 or 3, "
            f"got {tuple(array.shape)}."
        )
    array = np.clip(array.astype(np.float32), 0.0, 1.0)
    if array.shape[1] == 1:
        array = np.repeat(array, 3, axis=1)
    return np.round(array.transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def _png_data_uri(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def mask_outline(mask: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Pixel-edge segments between mask and background, as plotly line coordinates.

    Pixel ``(row i, column j)`` covers ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``; segments
    are separated by ``None``. An empty mask gives empty lists.

    >>> mask_outline(np.array([[1]]))[0]
    [-0.5, -0.5, None, 0.5, 0.5, None, -0.5, 0.5, None, -0.5, 0.5, None]
    """
    on = np.pad(np.asarray(mask) > 0.5, 1)
    xs: list[float | None] = []
    ys: list[float | None] = []
    rows, cols = np.nonzero(on[1:-1, 1:] != on[1:-1, :-1])  # vertical edges
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        xs += [j - 0.5, j - 0.5, None]
        ys += [i - 0.5, i + 0.5, None]
    rows, cols = np.nonzero(on[1:, 1:-1] != on[:-1, 1:-1])  # horizontal edges
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        xs += [j - 0.5, j + 0.5, None]
        ys += [i - 0.5, i - 0.5, None]
    return xs, ys


def _shrink(images: np.ndarray, masks, boxes, max_size: int):
    """Average-pool images (and masks) by an integer factor so the longer side <= max_size."""
    size = max(images.shape[1], images.shape[2])
    factor = math.ceil(size / max_size)
    if factor <= 1:
        return images, masks, boxes
    pooled = torch.nn.functional.avg_pool2d(
        torch.from_numpy(images).permute(0, 3, 1, 2).float(), factor, ceil_mode=True
    )
    images = np.round(pooled.permute(0, 2, 3, 1).numpy()).astype(np.uint8)
    if masks is not None:
        masks = torch.nn.functional.avg_pool2d(
            torch.from_numpy(masks[:, None].astype(np.float32)), factor, ceil_mode=True
        )[:, 0].numpy() >= 0.5
    if boxes is not None:
        boxes = np.stack(
            [boxes[:, 0] // factor, boxes[:, 1] // factor, -(-boxes[:, 2] // factor),
             -(-boxes[:, 3] // factor)],
            axis=1,
        )
    return images, masks, boxes


def image_gallery_figure(
    images,
    labels,
    class_names: Sequence[str],
    *,
    masks=None,
    boxes=None,
    titles: Sequence[str] | None = None,
    columns: int = 8,
    max_display_size: int = 64,
    cell_px: int = 110,
) -> go.Figure:
    """A grid of images titled by class, with optional lesion outlines and boxes.

    Parameters
    ----------
    images : Tensor or array (N, C, H, W), C = 1 or 3, values in [0, 1]
    labels : Tensor or array (N,) of int
        Class of each image; the default title is ``class_names[label]``.
    class_names : sequence of str
    masks : Tensor or array (N, 1, H, W) or (N, H, W), optional
        Binary masks; each is outlined along its pixel edges (cyan).
    boxes : Tensor or array (N, 4) of int, optional
        ``(x0, y0, x1, y1)`` with exclusive ends; drawn as rectangles (yellow).
    titles : sequence of str, optional
        One title per image, replacing the class names.
    columns : int >= 1, default 8
    max_display_size : int >= 8, default 64
        Larger images are average-pooled by an integer factor for display (keeps HTML small).
    cell_px : int >= 40, default 110
        Size of one grid cell in pixels.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``go.Image`` trace per image, then one ``go.Scatter`` outline per image when
        ``masks`` is given, then one ``go.Scatter`` rectangle per image when ``boxes`` is given.
    """
    check_param(_OWNER, "columns", columns, Interval(int, 1, None, closed="left"))
    check_param(_OWNER, "max_display_size", max_display_size, Interval(int, 8, None))
    check_param(_OWNER, "cell_px", cell_px, Interval(int, 40, None))
    pictures = _images_hwc(images)
    n, height, width = pictures.shape[:3]
    labels = _as_numpy(labels, "labels").reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{_OWNER}: 'labels' must have {n} entries, got {labels.shape[0]}.")
    names = list(class_names)
    if n and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(
            f"{_OWNER}: 'labels' must be in 0..{len(names) - 1} to index 'class_names', "
            f"got {int(labels.min())}..{int(labels.max())}."
        )
    if titles is None:
        titles = [names[int(c)] for c in labels]
    elif len(titles) != n:
        raise ValueError(f"{_OWNER}: 'titles' must have {n} entries, got {len(titles)}.")
    mask_array = None
    if masks is not None:
        mask_array = _as_numpy(masks, "masks")
        if mask_array.ndim == 4 and mask_array.shape[1] == 1:
            mask_array = mask_array[:, 0]
        if mask_array.shape != (n, height, width):
            raise ValueError(
                f"{_OWNER}: 'masks' must have shape ({n}, 1, {height}, {width}), "
                f"got {tuple(_as_numpy(masks, 'masks').shape)}."
            )
    box_array = None
    if boxes is not None:
        box_array = _as_numpy(boxes, "boxes").astype(np.int64)
        if box_array.shape != (n, 4):
            raise ValueError(
                f"{_OWNER}: 'boxes' must have shape ({n}, 4), got {tuple(box_array.shape)}."
            )
    pictures, mask_array, box_array = _shrink(pictures, mask_array, box_array, max_display_size)

    rows = max(1, math.ceil(n / columns))
    cols = min(columns, max(n, 1))
    figure = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(titles),
        horizontal_spacing=0.01,
        vertical_spacing=min(0.3 / rows, 0.08),
    )
    cells = [(k // cols + 1, k % cols + 1) for k in range(n)]
    for k, (r, c) in enumerate(cells):
        figure.add_trace(go.Image(source=_png_data_uri(pictures[k]), hoverinfo="skip"), r, c)
    if mask_array is not None:
        for k, (r, c) in enumerate(cells):
            xs, ys = mask_outline(mask_array[k])
            figure.add_trace(_line(xs, ys, MASK_COLOUR), r, c)
    if box_array is not None:
        for k, (r, c) in enumerate(cells):
            x0, y0, x1, y1 = (float(v) - 0.5 for v in box_array[k])
            xs = [x0, x1, x1, x0, x0]
            ys = [y0, y0, y1, y1, y0]
            figure.add_trace(_line(xs, ys, BOX_COLOUR), r, c)
    shown_h, shown_w = pictures.shape[1:3]
    figure.update_xaxes(visible=False, range=[-0.5, shown_w - 0.5])
    figure.update_yaxes(visible=False, range=[shown_h - 0.5, -0.5])  # row 0 at the top
    figure.update_annotations(font_size=11)
    figure.update_layout(
        width=cols * cell_px,
        height=rows * (cell_px + 10) + 30,
        margin={"l": 5, "r": 5, "t": 30, "b": 5},
        showlegend=False,
    )
    return figure


def _line(xs, ys, colour: str) -> go.Scatter:
    return go.Scatter(
        x=xs, y=ys, mode="lines", line={"color": colour, "width": 1}, hoverinfo="skip"
    )
