"""Segmentation views with one supervision level per client, as FedMix uses them.

Each client of a FedMix federation holds exactly one kind of annotation (``fedmix.md`` §1):

============  =================================================================================
``"pixel"``   the lesion mask
``"box"``     a bounding box, synthesised from the mask: the tight box plus a random margin of
              ``box_margin`` pixels on each side, clamped to the image; the training target is
              the filled box as a mask
``"image"``   the image-level label: which segmentation classes are present (one class here,
              the lesion, so the target is ``[1.]`` for every lesion image and ``[0.]`` for a
              normal one); the diagnostic class is in ``label`` as well
``"none"``    nothing (unlabeled)
============  =================================================================================

:class:`SegmentationDataset` hides the true mask of a weakly supervised *training* split; test
splits always carry it for evaluation. :func:`segmentation_view` builds a whole federation from
SynthDerm (four HAM10000-like sources) or SynthBUS (three breast-ultrasound sites).

Reference: Wicaksana et al., "FedMix: Mixed supervised federated learning for medical image
segmentation", IEEE TMI 2023, arXiv:2205.01840.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from fedlib._validation import InstanceOf, Interval, Options, check_param
from fedlib.data.base import ArrayDataset, FederatedDataset

__all__ = [
    "HAM10000_SOURCES",
    "SUPERVISION_LEVELS",
    "SUPERVISION_SETTINGS",
    "SegmentationDataset",
    "box_masks",
    "boxes_with_margin",
    "default_box_margin",
    "ham10000_counts",
    "image_level_targets",
    "segmentation_view",
    "tight_boxes",
]

SUPERVISION_LEVELS = ("pixel", "box", "image", "none")
_ARRAY_DATASET = InstanceOf(ArrayDataset, description="an ArrayDataset")


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
    lo, hi = _check_margin(owner, margin)
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


def _check_margin(owner: str, margin) -> tuple[int, int]:
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


# --------------------------------------------------------------------------- dataset


class SegmentationDataset(Dataset):
    """One client's images with the annotation its supervision level allows.

    Each item is a dict:

    ==============  ==========================================================================
    ``image``       (C, H, W) float32 in [0, 1]
    ``label``       int64 class label of the image (diagnosis: e.g. benign / malignant)
    ``target``      the training target at this level: ``"pixel"`` the mask (1, H, W);
                    ``"box"`` the filled box (1, H, W); ``"image"`` the presence vector (1,)
                    (``[1.]`` when the image shows a lesion); ``"none"`` an empty tensor (0,)
    ``box``         (4,) int64 ``(x0, y0, x1, y1)``, only at level ``"box"``
    ``mask``        (1, H, W) the true mask, only when ``reveal_mask`` (test splits, and
                    ``"pixel"`` clients, whose target it is anyway)
    ``index``       int64 row index (lets a pseudo-labeller store per-image labels)
    ==============  ==========================================================================

    Parameters
    ----------
    source : ArrayDataset
        Images, labels and true masks.
    supervision : {"pixel", "box", "image", "none"}
    boxes : array (N, 4), optional
        The annotated boxes of a ``"box"`` client; default: derived from the masks with
        :func:`boxes_with_margin` (``box_margin``, ``seed``).
    box_margin : (int, int) or int, default (1, 9)
    seed : int >= 0, default 0
    reveal_mask : bool, optional
        Whether items carry the true mask; default True only for ``"pixel"``.

    Attributes
    ----------
    labels : int64 Tensor (N,)
    supervision : str
    boxes : int64 Tensor (N, 4) or None
        The annotated boxes (``"box"`` level only).
    true_masks : float32 Tensor (N, 1, H, W)
        For evaluation (e.g. the quality of pseudo-labels) and for reproducing FedMix's code
        quirk Q1; training code of a weakly supervised client must not read it.
    """

    def __init__(
        self,
        source: ArrayDataset,
        supervision: str,
        *,
        boxes=None,
        box_margin: tuple[int, int] | int = (1, 9),
        seed: int = 0,
        reveal_mask: bool | None = None,
    ):
        owner = "SegmentationDataset"
        check_param(owner, "source", source, _ARRAY_DATASET)
        check_param(owner, "supervision", supervision, Options(SUPERVISION_LEVELS))
        if source.masks is None:
            raise ValueError(f"{owner}: 'source' must carry masks (ArrayDataset.masks is None).")
        if reveal_mask is None:
            reveal_mask = supervision == "pixel"
        if not isinstance(reveal_mask, bool):
            raise TypeError(f"{owner}: 'reveal_mask' must be a bool or None, got {reveal_mask!r}.")
        self.source = source
        self.supervision = supervision
        self.reveal_mask = reveal_mask
        self.labels = source.labels
        self.images = source.images
        self.true_masks = source.masks
        self.boxes: torch.Tensor | None = None
        n = len(source)
        if supervision == "box":
            if boxes is None:
                boxes = boxes_with_margin(source.masks, box_margin, seed=seed)
            boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.int64)
            if boxes.shape != (n, 4):
                raise ValueError(
                    f"{owner}: 'boxes' must have shape ({n}, 4), got {tuple(boxes.shape)}."
                )
            self.boxes = boxes
            h, w = source.masks.shape[-2:]
            self.targets = box_masks(boxes, h, w)
        elif supervision == "pixel":
            self.targets = source.masks
        elif supervision == "image":
            self.targets = image_level_targets(source.masks)
        else:
            self.targets = torch.zeros(n, 0)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {
            "image": self.images[index],
            "label": self.labels[index],
            "target": self.targets[index],
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if self.boxes is not None:
            item["box"] = self.boxes[index]
        if self.reveal_mask:
            item["mask"] = self.true_masks[index]
        return item

    def with_supervision(self, supervision: str, **kwargs) -> SegmentationDataset:
        """The same images at another supervision level (e.g. all-pixel for FedAvg-full)."""
        return SegmentationDataset(self.source, supervision, **kwargs)

    def __repr__(self) -> str:
        return (
            f"SegmentationDataset(n={len(self)}, supervision={self.supervision!r}, "
            f"reveal_mask={self.reveal_mask})"
        )


# --------------------------------------------------------------------------- federations

# HAM10000's four sources as the FedMix skin task uses them (totals, 80/20 split per client),
# with the ISIC-2019 centre (SynthDerm site style) of each; the class mix of each source is its
# ISIC-2019 training row (FLamby), whose totals are 80 % of these sizes.
HAM10000_SOURCES = (
    ("HAM_rosendahl", 2259, 3),
    ("HAM_vidir_modern", 3363, 2),
    ("HAM_vienna_dias", 439, 5),
    ("HAM_vidir_molemax", 3954, 1),
)

SUPERVISION_SETTINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "synthderm": {
        "fedmix": ("box", "box", "pixel", "box"),
        "full": ("pixel",) * 4,
        "pixel_only": ("none", "none", "pixel", "none"),
    },
    "synthbus": {
        "fedmix": ("image", "box", "pixel"),
        "full": ("pixel",) * 3,
        "pixel_only": ("none", "none", "pixel"),
    },
}
"""Named supervision settings per dataset (client order as in :func:`segmentation_view`).

``"fedmix"``: the paper's runs (``fedmix.md`` §1; the pixel client is the smallest);
``"full"``: every client has masks (FedAvg-full, local learning); ``"pixel_only"``: only the
pixel client is labelled, the others are unlabeled (FedAvg-strong, FedST)."""

_DEFAULT_SCALE = {"synthderm": 0.05, "synthbus": 0.3}


def default_box_margin(image_size: int) -> tuple[int, int]:
    """FedMix's 1-9 px margin at 224 px, rescaled: ``(1, max(1, round(9 * S / 224)))``."""
    return 1, max(1, int(round(9 * image_size / 224)))


def segmentation_view(
    dataset_name: str = "synthbus",
    supervision: str | Sequence[str] = "fedmix",
    *,
    scale: float | None = None,
    image_size: int = 64,
    difficulty: float = 0.5,
    test_frac: float | None = None,
    box_margin: tuple[int, int] | int | None = None,
    normal_to_none: bool = True,
    grayscale: bool = True,
    seed: int = 0,
) -> FederatedDataset:
    """A mixed-supervision federation for FedMix-style segmentation.

    ``"synthbus"``: three clients BUSI, BUSIS, UDIAT (:func:`fedlib.data.synthbus.synthbus`,
    FedMix fold-1 sizes scaled). ``"synthderm"``: four HAM10000-like sources in FedMix's order
    Rosendahl, ViDIR-modern, Vienna-Dias, ViDIR-molemax, with sizes 2259, 3363, 439, 3954
    (scaled) and each source's ISIC-2019 class mix, rendered by
    :func:`fedlib.data.synthderm.render_synthderm` in that centre's style.

    The images do not depend on ``supervision`` (same ``seed`` -> same pixels in every setting),
    so settings can be compared on identical data. Only the extra normal frames of SynthBUS
    (below) are added per setting.

    Parameters
    ----------
    dataset_name : {"synthbus", "synthderm"}
    supervision : str or sequence of str
        A named setting of :data:`SUPERVISION_SETTINGS` (``"fedmix"``, ``"full"``,
        ``"pixel_only"``) or one level per client from ``"pixel"``, ``"box"``, ``"image"``,
        ``"none"``. FedMix: SynthBUS ``("image", "box", "pixel")``, SynthDerm
        ``("box", "box", "pixel", "box")``.
    scale : float > 0, optional
        Size multiplier; default 0.3 (SynthBUS: 155 / 135 / 39 training images) and 0.05
        (SynthDerm: 91 / 135 / 21 / 159 training images).
    image_size : int, default 64
    difficulty : float in [0, 1], default 0.5
    test_frac : float in (0, 1), optional
        SynthDerm: test share per (client, class) cell, default 0.2. SynthBUS: default None
        keeps FedMix's split sizes; a value re-splits each cell.
    box_margin : (int, int) or int, optional
        Box margin per side in pixels; default :func:`default_box_margin` (1-9 px at 224 px,
        i.e. 1-3 px at 64 px). Drawn once per image (a fixed annotation, seeded).
    normal_to_none : bool, default True
        SynthBUS only: as in FedMix's code, BUSI's 133 normal frames (scaled, empty masks,
        label ``"normal"``) are added to the training splits of the clients marked ``"none"``
        (split evenly, in each client's machine style). No effect without ``"none"`` clients.
    grayscale : bool, default True
        SynthDerm only: convert RGB to one channel (ITU-R BT.601 luma), as FedMix's code reads
        every image in grayscale. False keeps colour.
    seed : int >= 0

    Returns
    -------
    FederatedDataset
        Train and test splits are :class:`SegmentationDataset`; test splits always reveal the
        true mask. ``info`` holds ``supervision`` (one level per client), ``setting`` (the
        name or None), ``box_margin``, ``train_counts``, ``test_counts`` and the generation
        parameters.
    """
    owner = "segmentation_view"
    check_param(owner, "dataset_name", dataset_name, Options(tuple(SUPERVISION_SETTINGS)))
    settings = SUPERVISION_SETTINGS[dataset_name]
    num_clients = len(settings["fedmix"])
    levels, setting = _resolve_supervision(owner, supervision, settings, num_clients)
    if scale is None:
        scale = _DEFAULT_SCALE[dataset_name]
    check_param(owner, "scale", scale, Interval(float, 0, None, closed="neither"))
    check_param(owner, "image_size", image_size, Interval(int, 16, 512))
    check_param(owner, "difficulty", difficulty, Interval(float, 0, 1))
    if test_frac is not None:
        check_param(owner, "test_frac", test_frac, Interval(float, 0, 1, closed="neither"))
    if box_margin is None:
        box_margin = default_box_margin(image_size)
    margin = _check_margin(owner, box_margin)
    for name, flag in (("normal_to_none", normal_to_none), ("grayscale", grayscale)):
        if not isinstance(flag, bool):
            raise TypeError(f"{owner}: {name!r} must be a bool, got {flag!r}.")
    check_param(owner, "seed", seed, Interval(int, 0, None, closed="left"))

    if dataset_name == "synthbus":
        base = _bus_federation(scale, image_size, difficulty, test_frac, seed)
        extra = _bus_normals(levels, scale, image_size, difficulty, seed) if normal_to_none else {}
    else:
        base = _derm_federation(scale, image_size, difficulty, test_frac, grayscale, seed)
        extra = {}

    class_names = base.class_names
    if extra:
        class_names = tuple(class_names) + ("normal",)
    train, test = {}, {}
    for k, level in enumerate(levels):
        source = base.train[k]
        if k in extra:
            source = ArrayDataset.concatenate([source, extra[k]])
        train[k] = SegmentationDataset(source, level, box_margin=margin, seed=seed * 1000 + k)
        test[k] = SegmentationDataset(
            base.test[k], level, box_margin=margin, seed=seed * 1000 + 500 + k, reveal_mask=True
        )
    info = dict(base.info)
    info.update(
        dataset=dataset_name,
        supervision=levels,
        setting=setting,
        box_margin=margin,
        normal_to_none=normal_to_none,
        train_counts=np.stack(
            [np.bincount(train[k].labels.numpy(), minlength=len(class_names)) for k in train]
        ).tolist(),
        test_counts=np.stack(
            [np.bincount(test[k].labels.numpy(), minlength=len(class_names)) for k in test]
        ).tolist(),
    )
    label = setting if setting is not None else "/".join(levels)
    return FederatedDataset(
        name=f"{base.name} segmentation ({label})",
        train=train,
        test=test,
        class_names=class_names,
        client_names=base.client_names,
        info=info,
    )


def _resolve_supervision(owner, supervision, settings, num_clients):
    if isinstance(supervision, str):
        if supervision not in settings:
            raise ValueError(
                f"{owner}: 'supervision' must be one of {', '.join(map(repr, settings))} or a "
                f"sequence of {num_clients} levels from {SUPERVISION_LEVELS}, got {supervision!r}."
            )
        return tuple(settings[supervision]), supervision
    levels = tuple(supervision)
    if len(levels) != num_clients or any(lv not in SUPERVISION_LEVELS for lv in levels):
        raise ValueError(
            f"{owner}: 'supervision' must give one level per client ({num_clients}) from "
            f"{SUPERVISION_LEVELS}, got {supervision!r}."
        )
    return levels, None


def _bus_federation(scale, image_size, difficulty, test_frac, seed) -> FederatedDataset:
    from fedlib.data.synthbus import synthbus

    return synthbus(
        scale=scale, image_size=image_size, difficulty=difficulty, test_frac=test_frac, seed=seed
    )


def _bus_normals(levels, scale, image_size, difficulty, seed) -> dict[int, ArrayDataset]:
    """BUSI's normal frames, scaled, split evenly over the ``"none"`` clients (train only)."""
    from fedlib.data.synthbus import BUSI_NORMAL_COUNT, NORMAL, render_synthbus

    none_clients = [k for k, level in enumerate(levels) if level == "none"]
    if not none_clients:
        return {}
    total = max(int(np.floor(BUSI_NORMAL_COUNT * scale + 0.5)), 1)
    shares = np.array_split(np.arange(total), len(none_clients))
    sites = np.concatenate([np.full(len(s), k) for k, s in zip(none_clients, shares, strict=True)])
    labels = np.full(total, NORMAL, dtype=np.int64)
    images, masks, boxes = render_synthbus(
        labels, sites, image_size=image_size, difficulty=difficulty, seed=seed + 7919
    )
    out = {}
    for k in none_clients:
        rows = np.flatnonzero(sites == k)
        if rows.size:
            idx = torch.from_numpy(rows)
            out[k] = ArrayDataset(
                images[idx], torch.from_numpy(labels[rows]), masks=masks[idx], boxes=boxes[idx]
            )
    return out


def ham10000_counts(scale: float, test_frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) class counts of the four HAM10000-like sources, ISIC-2019 class order.

    Cell totals ``round(scale * row_c * size / sum(row))`` from each source's ISIC-2019
    training row (present classes keep >= 1 image), split per cell with
    :func:`fedlib.data.partitions.split_count_table`.
    """
    from fedlib.data.partitions import split_count_table
    from fedlib.data.templates import scale_template, site_template

    isic = site_template("isic2019").astype(np.float64)
    rows = np.stack([isic[site] * size / isic[site].sum() for _, size, site in HAM10000_SOURCES])
    totals = scale_template(rows, scale)
    return split_count_table(totals, test_frac)


def _derm_federation(scale, image_size, difficulty, test_frac, grayscale, seed):
    from fedlib.data.partitions import federate_from_counts
    from fedlib.data.synthderm import render_synthderm
    from fedlib.data.templates import ISIC2019_CLASSES

    train_counts, test_counts = ham10000_counts(scale, 0.2 if test_frac is None else test_frac)
    centre_of_client = np.array([site for _, _, site in HAM10000_SOURCES], dtype=np.int64)

    def render(labels, clients, render_seed):
        images, masks, boxes = render_synthderm(
            labels,
            centre_of_client[clients],
            image_size=image_size,
            difficulty=difficulty,
            seed=render_seed,
        )
        if grayscale:
            luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images * luma).sum(dim=1, keepdim=True).clamp_(0.0, 1.0)
        return images, masks, boxes

    return federate_from_counts(
        render,
        train_counts,
        test_counts,
        class_names=ISIC2019_CLASSES,
        client_names=tuple(name for name, _, _ in HAM10000_SOURCES),
        name="SynthDerm-HAM",
        seed=seed,
        info={
            "scale": scale,
            "image_size": image_size,
            "difficulty": difficulty,
            "test_frac": 0.2 if test_frac is None else test_frac,
            "grayscale": grayscale,
            "seed": seed,
        },
    )
