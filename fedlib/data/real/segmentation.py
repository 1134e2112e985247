"""FedMix's mixed-supervision segmentation federations on the prepared real datasets.

:func:`real_segmentation_view` is :func:`fedlib.data.segmentation.segmentation_view` for real
files: it decodes the HAM10000 or BUSI images and lesion masks once (resized to ``image_size``),
groups them into FedMix's clients and gives each client one supervision level (pixel, box,
image label or nothing) with the same :class:`~fedlib.data.segmentation.SegmentationDataset`
machinery: boxes from the masks with a random margin drawn once per image, weak training splits
that never expose the true mask, test splits that always do.

Reference: Wicaksana et al., "FedMix: Mixed supervised federated learning for medical image
segmentation", IEEE TMI 2023, arXiv:2205.01840.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from fedlib._validation import Interval, Options, check_param
from fedlib.data._geometry import check_margin
from fedlib.data.base import ArrayDataset, FederatedDataset
from fedlib.data.real.busi import busi_dataset, load_busi
from fedlib.data.real.ham10000 import load_ham10000
from fedlib.data.segmentation import (
    SUPERVISION_SETTINGS,
    SegmentationDataset,
    _resolve_supervision,
    default_box_margin,
)

__all__ = ["REAL_SEGMENTATION_DATASETS", "busi_supervision_settings", "real_segmentation_view"]

REAL_SEGMENTATION_DATASETS = ("ham10000", "busi")


def busi_supervision_settings(num_clients: int) -> dict[str, tuple[str, ...]]:
    """Named supervision settings for BUSI split into ``num_clients`` clients.

    With 3 clients they are SynthBUS's (FedMix's BUSI, BUSIS, UDIAT order): ``"fedmix"`` =
    image, box, pixel. With ``K`` clients, ``"fedmix"`` keeps one pixel client (the last), one
    box client before it and image labels elsewhere; ``"full"`` is pixel everywhere and
    ``"pixel_only"`` labels only the last client.
    """
    if num_clients == 3:
        return dict(SUPERVISION_SETTINGS["synthbus"])
    weak = ("image",) * max(num_clients - 2, 0) + ("box",) * (num_clients >= 2)
    return {
        "fedmix": (*weak, "pixel"),
        "full": ("pixel",) * num_clients,
        "pixel_only": ("none",) * (num_clients - 1) + ("pixel",),
    }


def real_segmentation_view(
    name: str,
    supervision: str | Sequence[str] = "fedmix",
    *,
    root: str | os.PathLike[str] | None = None,
    image_size: int = 64,
    grayscale: bool = True,
    busi_clients: int = 3,
    test_frac: float = 0.2,
    box_margin: tuple[int, int] | int | None = None,
    normal_to_none: bool = True,
    seed: int = 0,
) -> FederatedDataset:
    """A FedMix mixed-supervision federation of real, prepared HAM10000 or BUSI files.

    ``"ham10000"``: the four acquisition sources as clients in FedMix's order rosendahl,
    vidir_modern, vienna_dias, vidir_molemax (:func:`~fedlib.data.real.load_ham10000`, 80/20
    split per source with the FedMix code's ``random_state=30448``); settings as SynthDerm's
    (``"fedmix"``: box, box, pixel, box).

    ``"busi"``: FedMix federates BUSI with BUSIS and UDIAT, which their authors give only on
    request. With BUSI alone, its benign and malignant images are split once into train/test
    (stratified, ``test_frac``, ``seed``; :func:`~fedlib.data.real.load_busi`) and each split is
    dealt into ``busi_clients`` clients stratified by class (the rows of each class shuffled with
    ``seed`` and dealt round-robin, so client sizes differ by at most one). The clients are
    therefore one site cut in ``busi_clients``, not FedMix's three hospitals: there is no
    acquisition shift between them.
    Settings: :func:`busi_supervision_settings`.

    Parameters
    ----------
    name : {"ham10000", "busi"}
    supervision : str or sequence of str
        A named setting (``"fedmix"``, ``"full"``, ``"pixel_only"``) or one level per client
        from ``"pixel"``, ``"box"``, ``"image"``, ``"none"``.
    root : path, optional
        The data root (:func:`~fedlib.data.root.data_root`), as prepared by
        ``data_scripts/ham10000.py`` or ``data_scripts/busi.py``.
    image_size : int in [16, 512], default 64
        Images and masks are resized to ``image_size`` x ``image_size`` (masks by nearest
        neighbour, so they stay binary).
    grayscale : bool, default True
        HAM10000 only: one channel (PIL's ITU-R BT.601 luma, as FedMix's code reads the images
        and as the synthetic view does); False keeps RGB. BUSI is always grey.
    busi_clients : int >= 1, default 3
        BUSI only: the number of clients.
    test_frac : float in (0, 1), default 0.2
        BUSI only (HAM10000 keeps the loader's FedMix split).
    box_margin : (int, int) or int, optional
        Box margin per side in pixels; default :func:`~fedlib.data.segmentation.
        default_box_margin` (1-9 px at 224 px). Drawn once per image (a fixed annotation).
    normal_to_none : bool, default True
        BUSI only: as in FedMix's code, BUSI's normal frames (empty masks, label ``"normal"``)
        are added to the training splits of the clients marked ``"none"``, split evenly.
    seed : int >= 0, default 0
        Seeds the BUSI split and the box margins (a property of the data, not of a run).

    Returns
    -------
    FederatedDataset
        Train and test splits are :class:`~fedlib.data.segmentation.SegmentationDataset` of
        decoded images; ``info`` holds ``supervision``, ``setting``, ``box_margin``,
        ``train_counts``, ``test_counts`` and the loading parameters.
    """
    owner = "real_segmentation_view"
    check_param(owner, "name", name, Options(REAL_SEGMENTATION_DATASETS))
    check_param(owner, "image_size", image_size, Interval(int, 16, 512))
    check_param(owner, "busi_clients", busi_clients, Interval(int, 1, None))
    check_param(owner, "test_frac", test_frac, Interval(float, 0, 1, closed="neither"))
    check_param(owner, "seed", seed, Interval(int, 0, None, closed="left"))
    for flag_name, flag in (("grayscale", grayscale), ("normal_to_none", normal_to_none)):
        if not isinstance(flag, bool):
            raise TypeError(f"{owner}: {flag_name!r} must be a bool, got {flag!r}.")
    margin = check_margin(owner, default_box_margin(image_size) if box_margin is None
                          else box_margin)
    if name == "ham10000":
        settings = dict(SUPERVISION_SETTINGS["synthderm"])
    else:
        settings = busi_supervision_settings(busi_clients)
    levels, setting = _resolve_supervision(owner, supervision, settings, len(settings["full"]))

    try:
        natural, train, test, class_names, client_names = _decode(
            name, root, image_size, grayscale, busi_clients, test_frac, normal_to_none, levels,
            seed)
    except FileNotFoundError as exc:
        if "data_scripts/" in str(exc):
            raise
        raise FileNotFoundError(f"{exc}. Prepare the data with: python data_scripts/{name}.py"
                                ) from exc
    train_views = {
        k: SegmentationDataset(train[k], level, box_margin=margin, seed=seed * 1000 + k)
        for k, level in enumerate(levels)
    }
    test_views = {
        k: SegmentationDataset(test[k], level, box_margin=margin, seed=seed * 1000 + 500 + k,
                               reveal_mask=True)
        for k, level in enumerate(levels)
    }
    label = setting if setting is not None else "/".join(levels)
    return FederatedDataset(
        name=f"{natural.name} segmentation ({label})",
        train=train_views,
        test=test_views,
        class_names=tuple(class_names),
        client_names=tuple(client_names),
        info={
            **natural.info,
            "dataset": name,
            "supervision": levels,
            "setting": setting,
            "box_margin": margin,
            "image_size": image_size,
            "grayscale": grayscale if name == "ham10000" else True,
            "normal_to_none": normal_to_none,
            "train_counts": _counts(train_views, len(class_names)),
            "test_counts": _counts(test_views, len(class_names)),
        },
    )


def _decode(name, root, image_size, grayscale, busi_clients, test_frac, normal_to_none, levels,
            seed):
    """Decode the clients' images and masks once: (natural, train, test, classes, clients)."""
    if name == "ham10000":
        natural = load_ham10000(root, image_size=image_size, channels=1 if grayscale else 3)
        train = [natural.train[k].materialize() for k in natural.client_ids()]
        test = [natural.test[k].materialize() for k in natural.client_ids()]
        class_names, client_names = natural.class_names, natural.client_names
    else:
        natural = load_busi(root, test_fraction=test_frac, seed=seed, image_size=image_size)
        train = _deal_by_class(natural.train[0].materialize(), busi_clients, seed)
        test = _deal_by_class(natural.test[0].materialize(), busi_clients, seed + 1)
        class_names = natural.class_names
        client_names = tuple(f"BUSI-{k + 1}" for k in range(busi_clients))
        none_clients = [k for k, level in enumerate(levels) if level == "none"]
        if normal_to_none and none_clients:
            frames = busi_dataset(root, classes=("normal",), image_size=image_size).materialize()
            label = len(class_names)
            class_names = (*class_names, "normal")
            for k, rows in zip(none_clients, np.array_split(np.arange(len(frames)),
                                                            len(none_clients)), strict=True):
                part = frames.subset(rows)
                part = ArrayDataset(part.images, torch.full_like(part.labels, label),
                                    masks=part.masks)
                train[k] = ArrayDataset.concatenate([train[k], part])

    return natural, train, test, class_names, client_names


def _deal_by_class(data: ArrayDataset, num_clients: int, seed: int) -> list[ArrayDataset]:
    """``data`` dealt round-robin into ``num_clients`` parts, class after class.

    The rows of each class are shuffled (``seed``) and laid end to end; row ``i`` of that order
    goes to client ``i mod K``. Every client gets ``floor`` or ``ceil`` of each class's share and
    the client sizes differ by at most one.
    """
    rng = np.random.default_rng(seed)
    labels = data.labels.numpy()
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c))
                            for c in np.unique(labels)])
    return [data.subset(np.sort(order[k::num_clients])) for k in range(num_clients)]


def _counts(views: dict[int, SegmentationDataset], num_classes: int) -> list[list[int]]:
    return [np.bincount(views[k].labels.numpy(), minlength=num_classes).tolist()
            for k in sorted(views)]
