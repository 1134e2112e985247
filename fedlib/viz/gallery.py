"""An image gallery as a plotly figure: a grid of images with their class, lesion outline and box.

The grid is drawn as one picture: the images are tiled into a single mosaic (one ``go.Image``
trace holding a JPEG data URI), the lesion outlines and boxes are two SVG path shapes over it
and the titles are annotations in the gaps between the rows. A gallery of 48 images is about
70 kB of HTML (it was 600 kB as 48 PNG subplots), is drawn in one pass instead of 48 subplots,
and scales with the page like an image (fixed aspect ratio; the book's figure script keeps
``layout.width`` as the largest width). Larger images are shrunk for display to at most
``max_display_size`` pixels per side. Hovering over an image shows its title, which also
serves a phone screen where the titles would not fit.
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

from fedlib._validation import Interval, check_param

__all__ = ["image_gallery_figure"]

_OWNER = "image_gallery_figure"
MASK_COLOUR = "#00e5ff"
BOX_COLOUR = "#ffd400"
JPEG_QUALITY = 85
TITLE_FONT_PX = 11
GAP_PX = 4  # white space between two images, in screen pixels at the gallery's full size


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


def _jpeg_data_uri(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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


def outline_loops(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """The boundary of a binary mask as closed loops of corner points along the pixel edges.

    Pixel ``(row i, column j)`` is the square ``[j, j + 1] x [i, i + 1]``; each loop runs
    clockwise on screen (y pointing down) around the foreground (holes the other way), starts at
    its top-left-most corner and keeps only the corners where it turns. An empty mask gives
    no loop.

    >>> outline_loops(np.array([[1, 1]]))
    [[(0, 0), (2, 0), (2, 1), (0, 1)]]
    """
    on = np.asarray(mask) > 0.5
    padded = np.pad(on, 1)
    rows, cols = np.nonzero(on)
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    sides = (  # neighbour offset (di, dj), then the edge's start and end corners (x, y)
        ((-1, 0), (0, 0), (1, 0)),  # top: left to right
        ((0, 1), (1, 0), (1, 1)),  # right: top to bottom
        ((1, 0), (1, 1), (0, 1)),  # bottom: right to left
        ((0, -1), (0, 1), (0, 0)),  # left: bottom to top
    )
    for (di, dj), (sx, sy), (ex, ey) in sides:
        open_side = ~padded[rows + 1 + di, cols + 1 + dj]
        for i, j in zip(rows[open_side].tolist(), cols[open_side].tolist(), strict=True):
            edges.setdefault((j + sx, i + sy), []).append((j + ex, i + ey))
    loops = []
    while edges:
        start = min(edges, key=lambda point: (point[1], point[0]))
        loop, point = [start], start
        while True:
            ends = edges[point]
            nxt = ends.pop()
            if not ends:
                del edges[point]
            if nxt == start:
                break
            loop.append(nxt)
            point = nxt
        loops.append(_corners(loop))
    return loops


def _corners(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The points of a closed rectilinear loop where it turns."""
    kept = []
    for k, (x, y) in enumerate(loop):
        (px, py), (nx, ny) = loop[k - 1], loop[(k + 1) % len(loop)]
        if not ((px == x == nx) or (py == y == ny)):
            kept.append((x, y))
    return kept


def _number(value: float) -> str:
    return f"{value:g}"


def _loop_path(loop: list[tuple[float, float]]) -> str:
    """A closed rectilinear loop as a compact SVG path (``M x,y`` then ``H x`` / ``V y``)."""
    x0, y0 = loop[0]
    parts = [f"M{_number(x0)},{_number(y0)}"]
    for (px, _), (x, y) in zip(loop, loop[1:], strict=False):
        parts.append(f"V{_number(y)}" if x == px else f"H{_number(x)}")
    return "".join(parts) + "Z"


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
        Width of one grid cell in pixels at the gallery's full size (``layout.width``).

    Returns
    -------
    plotly.graph_objects.Figure
        ``data[0]``: the mosaic (``go.Image``, JPEG); ``data[1]``: invisible markers at the
        image centres whose hover text is the title. ``layout.annotations``: one title per image,
        in order. ``layout.shapes``: one path of all mask outlines when ``masks`` is given, then
        one path of all boxes when ``boxes`` is given, in the mosaic's pixel coordinates (image
        ``k`` at row ``k // columns``, column ``k % columns`` has its pixel ``(0, 0)`` at
        ``(col * (W + gap), row * (H + band + gap) + band)``, see ``layout.meta``).
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
    tile_h, tile_w = pictures.shape[1:3]
    scale = cell_px / tile_w  # screen pixels per mosaic pixel at full size
    gap = max(1, round(GAP_PX / scale))
    band = max(2, round((TITLE_FONT_PX + 6) / scale))  # room for a title above each row
    step_x, step_y = tile_w + gap, tile_h + band + gap
    mosaic = np.full((rows * step_y, cols * step_x - gap, 3), 255, dtype=np.uint8)
    origins = []
    for k in range(n):
        x0, y0 = (k % cols) * step_x, (k // cols) * step_y + band
        mosaic[y0:y0 + tile_h, x0:x0 + tile_w] = pictures[k]
        origins.append((x0, y0))

    # pixel (i, j) of the mosaic covers [j, j + 1] x [i, i + 1]: outlines on whole numbers
    figure = go.Figure(go.Image(source=_jpeg_data_uri(mosaic), x0=0.5, y0=0.5,
                                hoverinfo="skip"))
    figure.add_trace(go.Scatter(
        x=[x0 + tile_w / 2 for x0, _ in origins], y=[y0 + tile_h / 2 for _, y0 in origins],
        mode="markers", marker={"size": max(4, cell_px // 2), "opacity": 0},
        hovertext=list(titles), hoverinfo="text", showlegend=False,
    ))  # fmt: skip
    annotations = [
        {"x": x0 + tile_w / 2, "y": y0, "text": str(title), "showarrow": False,
         "yanchor": "bottom", "font": {"size": TITLE_FONT_PX}, "xref": "x", "yref": "y"}
        for (x0, y0), title in zip(origins, titles, strict=True)
    ]  # fmt: skip
    shapes = []
    if mask_array is not None:
        path = "".join(_loop_path([(x + x0, y + y0) for x, y in loop])
                       for k, (x0, y0) in enumerate(origins)
                       for loop in outline_loops(mask_array[k]))  # fmt: skip
        shapes.append(_path_shape(path, MASK_COLOUR))
    if box_array is not None:
        path = "".join(
            _loop_path([(bx0 + x0, by0 + y0), (bx1 + x0, by0 + y0), (bx1 + x0, by1 + y0),
                        (bx0 + x0, by1 + y0)])
            for (x0, y0), (bx0, by0, bx1, by1) in zip(origins, box_array.tolist(), strict=True)
        )  # fmt: skip
        shapes.append(_path_shape(path, BOX_COLOUR))
    full_width = cols * cell_px
    mosaic_h, mosaic_w = mosaic.shape[:2]
    figure.update_xaxes(visible=False, range=[0, mosaic_w], constrain="domain")
    figure.update_yaxes(visible=False, range=[mosaic_h, 0], scaleanchor="x",
                        constrain="domain")
    figure.update_layout(
        width=full_width,
        height=round(full_width * mosaic_h / mosaic_w) + 10,
        margin={"l": 5, "r": 5, "t": 5, "b": 5},
        showlegend=False,
        annotations=annotations,
        shapes=shapes,
        hovermode="closest",
        meta={"gallery": {"rows": rows, "columns": cols, "tile": [tile_h, tile_w],
                          "gap": gap, "band": band}},
    )  # fmt: skip
    return figure


def _path_shape(path: str, colour: str) -> dict:
    return {"type": "path", "path": path or "M0,0", "xref": "x", "yref": "y",
            "line": {"color": colour, "width": 1}, "layer": "above"}
