"""Helpers the chapters share, so that their reader-facing cells stay short.

- **Parameters**: :func:`check_parameters` validates a chapter's ``parameters`` cell with the
  messages of :mod:`fedlib._validation` and prints the values in use; :func:`check_memory` is
  the size guard that refuses a dataset too large for a laptop before it is generated.
- **Write it yourself**: :func:`check_yours` runs the reader's function, falls back to the
  chapter's folded solution while the reader's is still a stub, compares the result with
  ``fedlib``'s and says whose version ran.
- **Looking at data**: :func:`first_per_class`, :func:`first_of_class` and the galleries
  :func:`site_gallery` (one row per site), :func:`class_site_gallery` (one row per class, one
  column per site), :func:`supervision_gallery` (what each client of a segmentation view may
  train on) and :func:`cell_gallery` (any cells, blanks allowed).
- **Tables side by side**: :func:`side_by_side` and :func:`share_heatmap` put a real and a
  synthetic per-site class table next to each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from fedlib._validation import Constraint, Interval, Options, check_param

__all__ = [
    "ExerciseCheck",
    "Interval",
    "ListOf",
    "Options",
    "cell_gallery",
    "check_memory",
    "check_parameters",
    "check_yours",
    "class_site_gallery",
    "first_of_class",
    "first_per_class",
    "same_values",
    "share_heatmap",
    "short_site_name",
    "side_by_side",
    "site_gallery",
    "supervision_gallery",
    "synthderm_images",
]

MEMORY_LIMIT_GIB = 2.0
"""Default size guard: the images a chapter may hold in memory (Colab's free tier has ~12 GB)."""


# --- parameters -------------------------------------------------------------------------------

class ListOf(Constraint):
    """A list (or tuple) of ``min_len`` to ``max_len`` items that each satisfy ``item``.

    >>> ListOf(Interval(int, 0, None), distinct=True).describe()
    'a non-empty list of distinct ints >= 0'
    """

    def __init__(self, item: Constraint, *, min_len: int = 1, max_len: int | None = None,
                 distinct: bool = False):
        self.item, self.min_len, self.max_len, self.distinct = item, min_len, max_len, distinct

    def is_satisfied_by(self, value: Any) -> bool:
        if not isinstance(value, list | tuple) or len(value) < self.min_len:
            return False
        if self.max_len is not None and len(value) > self.max_len:
            return False
        if self.distinct and len(set(value)) != len(value):
            return False
        return all(self.item.is_satisfied_by(v) for v in value)

    def describe(self) -> str:
        items = self.item.describe()
        for singular, plural in (("an int", "ints"), ("a float", "floats")):
            if items.startswith(singular):
                items = plural + items[len(singular):]
        size = "non-empty " if self.min_len == 1 else ""
        if self.min_len > 1:
            size = f"at least {self.min_len}-long "
        text = f"a {size}list of {'distinct ' if self.distinct else ''}{items}"
        if self.max_len is not None:
            text += f", at most {self.max_len} of them"
        return text


def check_parameters(
    owner: str, namespace: Mapping[str, Any], rules: Mapping[str, Constraint], *, show: bool = True
) -> None:
    """Validate a chapter's parameters and print the values in use.

    Parameters
    ----------
    owner : str
        Who speaks in the messages, e.g. ``"Chapter 1"``.
    namespace : mapping
        Where the parameters live (``globals()`` in a notebook).
    rules : mapping of name to Constraint
        One rule per parameter, e.g. ``{"SEEDS": ListOf(Interval(int, 0, None))}``.
    show : bool, default True
        Print ``NAME = value`` for every parameter, in the order of ``rules``.

    Raises
    ------
    ValueError or TypeError
        ``"Chapter 2: 'SEEDS' must be a non-empty list of distinct ints >= 0, got []."``
    """
    for name, rule in rules.items():
        if name not in namespace:
            raise ValueError(f"{owner}: the parameter {name!r} is not set; run the parameters "
                             "cell first.")
        check_param(owner, name, namespace[name], rule)
    if show:
        width = max(len(name) for name in rules)
        print("This run's parameters:")
        for name in rules:
            print(f"  {name:<{width}} = {namespace[name]!r}")


def check_memory(
    owner: str,
    *,
    images: int,
    image_size: int,
    channels: int = 3,
    parameters: Mapping[str, Any],
    limit_gib: float = MEMORY_LIMIT_GIB,
) -> None:
    """The size guard: refuse to generate more image memory than ``limit_gib``.

    An in-memory image takes ``4 (C + 1) H W`` bytes (a float32 image and its float32 mask).

    Parameters
    ----------
    owner : str
    images : int
        Images the chapter is about to generate.
    image_size : int
        Pixels per side.
    channels : int, default 3
    parameters : mapping of name to value
        The parameters that decide the size, named in the message.
    limit_gib : float, default 2.0

    Raises
    ------
    ValueError
        ``"Chapter 2: LT_HEAD = 100000, IMAGE_SIZE = 28 would generate 800,016 images, about
        9.3 GiB in memory; the size guard allows 2 GiB. Lower LT_HEAD or IMAGE_SIZE."``
    """
    check_param("check_memory", "images", images, Interval(int, 0, None))
    check_param("check_memory", "image_size", image_size, Interval(int, 1, None))
    check_param("check_memory", "channels", channels, Interval(int, 1, None))
    check_param("check_memory", "limit_gib", limit_gib, Interval(float, 0, None, closed="neither"))
    gib = images * 4 * (channels + 1) * image_size**2 / 2**30
    if gib > limit_gib:
        names = list(parameters)
        given = ", ".join(f"{name} = {value!r}" for name, value in parameters.items())
        lower = " or ".join(names) if names else "the sizes"
        raise ValueError(
            f"{owner}: {given} would generate {images:,} images, about {gib:.1f} GiB in "
            f"memory; the size guard allows {limit_gib:g} GiB. Lower {lower}."
        )


def synthderm_images(
    *, scale: float | None = None, counts: Any = None, test_frac: float = 0.2
) -> int:
    """How many images (train + test) :func:`fedlib.data.synthderm.synthderm` would generate.

    Counted from the same tables as the generator, without drawing a pixel.
    """
    from fedlib.data.synthderm import synthderm_test_counts
    from fedlib.data.templates import scale_template, site_template

    if (scale is None) == (counts is None):
        raise ValueError("synthderm_images: give exactly one of 'scale' and 'counts'.")
    if counts is None:
        check_param("synthderm_images", "scale", scale, Interval(float, 0, None, closed="neither"))
        train = scale_template(site_template("isic2019"), float(scale))
    else:
        train = np.asarray(counts, dtype=np.int64)
    return int(train.sum() + synthderm_test_counts(train, test_frac).sum())


# --- write it yourself ------------------------------------------------------------------------

@dataclass(frozen=True)
class ExerciseCheck:
    """What :func:`check_yours` found.

    Attributes
    ----------
    result : Any
        The value of the version that ran.
    yours : bool
        Whether the reader's version ran (``False``: it is still a stub, the solution ran).
    matches : bool
        Whether that value matches the reference.
    message : str
        Whose version ran and whether it matches, in words.
    """

    result: Any
    yours: bool
    matches: bool
    message: str


def same_values(a: Any, b: Any, *, rtol: float | None = None, atol: float | None = None
                ) -> tuple[bool, str]:
    """Whether two results agree (tensors, numbers, or dicts of them), and where not.

    Tolerances are :func:`torch.testing.assert_close`'s defaults for the dtype unless given.
    """
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            return False, f"expected a dict, got {type(a).__name__}"
        if set(a) != set(b):
            missing, extra = sorted(set(b) - set(a)), sorted(set(a) - set(b))
            return False, f"keys differ (missing {missing}, unexpected {extra})"
        for key in b:
            ok, why = same_values(a[key], b[key], rtol=rtol, atol=atol)
            if not ok:
                return False, f"{key!r}: {why}"
        return True, ""
    try:
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=rtol, atol=atol,
                                   check_dtype=False)
    except (AssertionError, TypeError, ValueError, RuntimeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = [line for line in lines if line.startswith(("Mismatched", "Greatest absolute"))]
        return False, "; ".join(detail or lines[:1]) or type(error).__name__
    return True, ""


def _is_stub_result(value: Any) -> bool:
    return value is None or value is Ellipsis


def check_yours(
    yours: Callable[..., Any],
    solution: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    reference: Any,
    reference_name: str,
) -> ExerciseCheck:
    """Run the reader's function, or the folded solution while the reader's is a stub, and
    compare the result with ``reference``.

    A function counts as a stub when it raises ``NotImplementedError`` or returns ``None`` or
    ``Ellipsis`` (a body of ``...``). Any other error is the reader's to see, and propagates.

    Parameters
    ----------
    yours, solution : callable
        The reader's function and the chapter's solution, called with ``*args, **kwargs``.
    args, kwargs
    reference : Any
        ``fedlib``'s value for the same inputs.
    reference_name : str
        How the message names the reference, e.g. ``"fedlib's weighted_average"``.

    Returns
    -------
    ExerciseCheck
    """
    kwargs = dict(kwargs or {})
    name = getattr(yours, "__name__", "your function")
    try:
        result = yours(*args, **kwargs)
        ran_yours = not _is_stub_result(result)
    except NotImplementedError:
        ran_yours = False
    if not ran_yours:
        result = solution(*args, **kwargs)
    matches, why = same_values(result, reference)
    if ran_yours and matches:
        message = f"Your {name} ran, and it matches {reference_name}."
    elif ran_yours:
        message = (f"Your {name} ran, and it does not match {reference_name} ({why}). Fix it "
                   "and rerun this cell.")
    else:
        message = (f"{name} is still a stub, so the folded solution ran"
                   f"{', and it matches ' if matches else ' and does NOT match '}"
                   f"{reference_name}. Complete {name} above and rerun this cell to check "
                   "yours.")
    return ExerciseCheck(result, ran_yours, matches, message)


# --- looking at data --------------------------------------------------------------------------

def first_per_class(dataset: Any, per_class: int = 1) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class present in ``dataset``
    (classes in increasing order)."""
    check_param("first_per_class", "per_class", per_class, Interval(int, 1, None))
    labels = np.asarray(dataset.labels)
    return np.concatenate(
        [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
        or [np.zeros(0, dtype=np.int64)]
    )


def first_of_class(dataset: Any, label: int, rank: int = 0) -> int | None:
    """Index of the ``rank``-th image of class ``label`` (cycling through them), or ``None``
    when the dataset has no image of that class."""
    found = np.flatnonzero(np.asarray(dataset.labels) == label)
    return int(found[rank % found.size]) if found.size else None


def short_site_name(site: str, max_len: int = 12) -> str:
    """A site name short enough for a gallery title (``HAM_vidir_molemax`` -> ``molemax``)."""
    return site.removeprefix("HAM_").removeprefix("vidir_")[:max_len]


def cell_gallery(
    cells: Sequence[tuple[Any, int | None, str]], class_names: Sequence[str], columns: int,
    *, boxes: bool = True,
) -> go.Figure:
    """A gallery of ``(dataset, index, title)`` cells; a cell whose dataset is ``None`` (or
    whose index is ``None``) is a light-grey blank, e.g. a class that a site does not have."""
    from fedlib.viz import image_gallery_figure

    shown = [(d, i) for d, i, _ in cells if d is not None and i is not None]
    if not shown:
        raise ValueError("cell_gallery: 'cells' must hold at least one image.")
    first = shown[0][0]
    with_masks = all(getattr(d, "masks", None) is not None for d, _ in shown)
    with_boxes = boxes and all(getattr(d, "boxes", None) is not None for d, _ in shown)
    images, masks, box_rows, labels = [], [], [], []
    for dataset, index, _ in cells:
        if dataset is None or index is None:
            images.append(torch.full_like(first.images[0], 0.85))
            masks.append(torch.zeros_like(first.masks[0]) if with_masks else None)
            box_rows.append(torch.zeros(4, dtype=torch.int64))
            labels.append(torch.tensor(0))
            continue
        images.append(dataset.images[index])
        masks.append(dataset.masks[index] if with_masks else None)
        box_rows.append(dataset.boxes[index] if with_boxes else None)
        labels.append(dataset.labels[index])
    return image_gallery_figure(
        torch.stack(images), torch.stack(labels), class_names,
        masks=torch.stack(masks) if with_masks else None,
        boxes=torch.stack(box_rows) if with_boxes else None,
        titles=[title for _, _, title in cells], columns=columns,
    )


def site_gallery(data: Any, *, per_site: int = 6, split: str = "train") -> go.Figure:
    """One row per site: the first image of each class the site has (up to ``per_site``)."""
    check_param("site_gallery", "per_site", per_site, Interval(int, 1, None))
    check_param("site_gallery", "split", split, Options(("train", "test")))
    cells = []
    for k, site in zip(data.client_ids(), data.client_names, strict=True):
        part = getattr(data, split)[k]
        for index in first_per_class(part)[:per_site]:
            name = data.class_names[int(part.labels[index])]
            cells.append((part, int(index), f"{short_site_name(site)}: {name}"))
    return cell_gallery(cells, data.class_names, columns=per_site, boxes=False)


def class_site_gallery(data: Any, *, split: str = "train") -> go.Figure:
    """One row per class, one column per site: the first image of that class at that site, or a
    blank titled "no CLASS" where the site has none."""
    check_param("class_site_gallery", "split", split, Options(("train", "test")))
    cells = []
    for c, name in enumerate(data.class_names):
        for k, site in zip(data.client_ids(), data.client_names, strict=True):
            part = getattr(data, split)[k]
            index = first_of_class(part, c)
            title = f"{short_site_name(site)}: {'' if index is not None else 'no '}{name}"
            cells.append((part if index is not None else None, index, title))
    return cell_gallery(cells, data.class_names, columns=data.num_clients)


def supervision_gallery(views: Sequence[Any], per_client: int = 4) -> go.Figure:
    """The first ``per_client`` training images of every client of segmentation views, each with
    the annotation its supervision level gives it: the lesion outline (``pixel``), the box whose
    filled area is the target (``box``), nothing (``image``, ``none``). One row per client."""
    from fedlib.viz import image_gallery_figure

    check_param("supervision_gallery", "per_client", per_client, Interval(int, 1, None))
    images, masks, boxes, titles = [], [], [], []
    for view in views:
        for k, site in enumerate(view.client_names):
            train = view.train[k]
            rows = torch.arange(min(per_client, len(train)))
            level = train.supervision
            empty_mask = torch.zeros(rows.numel(), 1, *train.images.shape[-2:])
            images.append(train.images[rows])
            masks.append(train.targets[rows] if level in ("pixel", "box") else empty_mask)
            boxes.append(train.boxes[rows] if level == "box"
                         else torch.zeros(rows.numel(), 4, dtype=torch.int64))
            titles += [f"{short_site_name(site)}: {level}"] * rows.numel()
    images_, masks_ = torch.cat(images), torch.cat(masks)
    return image_gallery_figure(
        images_, torch.zeros(len(images_), dtype=torch.int64), ["lesion"], masks=masks_,
        boxes=torch.cat(boxes), titles=titles, columns=per_client,
    )


# --- tables side by side ----------------------------------------------------------------------

def side_by_side(real: Any, synthetic: Any, class_names: Sequence[str],
                 site_names: Sequence[str], real_name: str, synthetic_name: str) -> pd.DataFrame:
    """A real and a synthetic count table (sites x classes) as one DataFrame, with totals."""
    tables = {}
    for name, counts in ((real_name, real), (synthetic_name, synthetic)):
        frame = pd.DataFrame(np.asarray(counts), index=list(site_names),
                             columns=list(class_names))
        frame["total"] = frame.sum(axis=1)
        tables[name] = frame
    frame = pd.concat(tables, axis=1)
    frame.index.name = "site"
    return frame


def share_heatmap(real: Any, synthetic: Any, class_names: Sequence[str],
                  site_names: Sequence[str], real_name: str, synthetic_name: str,
                  title: str) -> go.Figure:
    """Class shares of every site, each real row directly above its synthetic row."""
    from fedlib.viz.partitions import client_class_heatmap

    real, synthetic = np.asarray(real), np.asarray(synthetic)
    rows, names = [], []
    for k, site in enumerate(site_names):
        rows += [real[k], synthetic[k]]
        names += [f"{site} · {real_name}", f"{site} · {synthetic_name}"]
    return client_class_heatmap(np.stack(rows), class_names, names, normalize=True, title=title)
