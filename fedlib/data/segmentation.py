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
SynthDerm (four HAM10000-like sources) or SynthBUS (three breast-ultrasound sites); which sources,
in which order and how large is :mod:`fedlib.data.recipes`. The box helpers live in
``fedlib.data._geometry`` and are importable from here as well.

Reference: Wicaksana et al., "FedMix: Mixed supervised federated learning for medical image
segmentation", IEEE TMI 2023, arXiv:2205.01840.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from fedlib._validation import InstanceOf, Interval, Options, check_param
from fedlib.data._geometry import (
    box_masks,
    boxes_with_margin,
    check_margin,
    image_level_targets,
    tight_boxes,
)
from fedlib.data.base import ArrayDataset, FederatedDataset
from fedlib.data.partitions import federate_from_counts
from fedlib.data.recipes import (
    HAM10000_SOURCES,
    bus_normal_clients,
    ham10000_centres,
    ham10000_client_names,
    ham10000_counts,
)
from fedlib.data.synthbus import NORMAL, render_synthbus, synthbus
from fedlib.data.synthderm import render_synthderm
from fedlib.data.templates import ISIC2019_CLASSES

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
    :func:`fedlib.data.synthderm.render_synthderm` in that centre's style. Both recipes are in
    :mod:`fedlib.data.recipes`.

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
    margin = check_margin(owner, box_margin)
    for name, flag in (("normal_to_none", normal_to_none), ("grayscale", grayscale)):
        if not isinstance(flag, bool):
            raise TypeError(f"{owner}: {name!r} must be a bool, got {flag!r}.")
    check_param(owner, "seed", seed, Interval(int, 0, None, closed="left"))

    if dataset_name == "synthbus":
        base = synthbus(
            scale=scale, image_size=image_size, difficulty=difficulty, test_frac=test_frac,
            seed=seed,
        )
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


def _bus_normals(levels, scale, image_size, difficulty, seed) -> dict[int, ArrayDataset]:
    """BUSI's normal frames, scaled, split evenly over the ``"none"`` clients (train only)."""
    sites = bus_normal_clients([k for k, level in enumerate(levels) if level == "none"], scale)
    if sites.size == 0:
        return {}
    labels = np.full(sites.size, NORMAL, dtype=np.int64)
    images, masks, boxes = render_synthbus(
        labels, sites, image_size=image_size, difficulty=difficulty, seed=seed + 7919
    )
    out = {}
    for k in np.unique(sites).tolist():
        rows = np.flatnonzero(sites == k)
        idx = torch.from_numpy(rows)
        out[k] = ArrayDataset(
            images[idx], torch.from_numpy(labels[rows]), masks=masks[idx], boxes=boxes[idx]
        )
    return out


def _derm_federation(scale, image_size, difficulty, test_frac, grayscale, seed):
    """SynthDerm rendered as the four HAM10000 sources, each in its ISIC-2019 centre's style."""
    train_counts, test_counts = ham10000_counts(scale, 0.2 if test_frac is None else test_frac)
    centre_of_client = ham10000_centres()

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
        client_names=ham10000_client_names(),
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
