"""Breast ultrasound with lesion masks: BUSI in its native layout, and paired image/mask folders.

BUSI (Al-Dhabyani, Gomaa, Khaled & Fahmy, "Dataset of breast ultrasound images", Data in Brief
28, 104863, 2020) unpacks to ``Dataset_BUSI_with_GT/`` with one folder per class,
``benign/``, ``malignant/``, ``normal/``; each image ``benign (1).png`` has a mask
``benign (1)_mask.png``, and a few lesions have extra masks ``benign (1)_mask_1.png``, ... which
are merged (logical OR). Normal images have empty masks.

BUSIS (Xian et al., 2018) and UDIAT "Dataset B" (Yap et al., IEEE JBHI 2018) are given by their
authors on request; once obtained, :func:`paired_folder_dataset` reads an ``images`` folder and a
``masks`` folder that pair files by name (the FedMix authors' ``original/`` + ``GT/`` layout).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from fedlib.data.base import FederatedDataset
from fedlib.data.real._io import (
    DEFAULT_MAX_PIXELS,
    DataFormatError,
    natural_key,
    require_dir,
)
from fedlib.data.real.datasets import ImageFileDataset
from fedlib.data.root import data_root

__all__ = ["BUSI_CLASSES", "busi_dataset", "load_busi", "paired_folder_dataset"]

BUSI_CLASSES = ("benign", "malignant", "normal")
_BUSI_FOLDER = "Dataset_BUSI_with_GT"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_MASK_NAME = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<extra>\d+))?$")
_HINT = "Prepare the data with: python data_scripts/busi.py"


def _busi_folder(root, dataset_dir) -> Path:
    if dataset_dir is not None:
        return Path(dataset_dir)
    return data_root(root) / "busi" / _BUSI_FOLDER


def busi_dataset(
    root: str | os.PathLike[str] | None = None,
    *,
    dataset_dir: str | os.PathLike[str] | None = None,
    classes: Sequence[str] = BUSI_CLASSES,
    image_size: int | tuple[int, int] | None = 256,
    channels: int = 1,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageFileDataset:
    """All BUSI images of ``classes`` with their merged masks, as one lazy dataset.

    The files are looked up in ``<root>/busi/Dataset_BUSI_with_GT`` (``root``: the data root,
    see :func:`~fedlib.data.root.data_root`) or in ``dataset_dir`` if given. Labels index
    ``classes`` (default benign 0, malignant 1, normal 2). Images are read as grey
    (``channels=1``), as FedMix does. Every image needs at least one mask file; a mask file
    without its image is an error.
    """
    owner = "busi_dataset"
    unknown = [c for c in classes if c not in BUSI_CLASSES]
    if not classes or unknown:
        raise ValueError(f"{owner}: 'classes' must be a non-empty subset of "
                         f"{', '.join(BUSI_CLASSES)}, got {list(classes)!r}.")
    folder = _busi_folder(root, dataset_dir)
    paths: list[Path] = []
    mask_groups: list[list[Path]] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = require_dir(folder / name, f"BUSI class folder {name!r}", _HINT)
        images: dict[str, Path] = {}
        masks: dict[str, list[tuple[int, Path]]] = {}
        for file in class_dir.iterdir():
            if not file.is_file() or file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            match = _MASK_NAME.match(file.stem)
            if match:
                order = int(match.group("extra")) if match.group("extra") else 0
                masks.setdefault(match.group("stem"), []).append((order, file))
            else:
                images[file.stem] = file
        orphans = sorted(set(masks) - set(images))
        if orphans:
            raise DataFormatError(f"{class_dir}: mask file(s) without an image, e.g. "
                                  f"{masks[orphans[0]][0][1].name!r}.")
        unmasked = sorted(set(images) - set(masks))
        if unmasked:
            raise DataFormatError(f"{class_dir}: image(s) without a '_mask' file, e.g. "
                                  f"{images[unmasked[0]].name!r}.")
        if not images:
            found = sorted(p.name for p in class_dir.iterdir())[:3]
            raise DataFormatError(
                f"{class_dir}: the class folder {name!r} holds no image"
                + (f" (found {', '.join(found)})" if found else " (it is empty)")
                + f"; every class needs images named like '{name} (1).png'. {_HINT}"
            )
        for stem in sorted(images, key=natural_key):
            paths.append(images[stem])
            mask_groups.append([path for _, path in sorted(masks[stem])])
            labels.append(label)
    return ImageFileDataset(paths, labels, image_size=image_size, channels=channels,
                            mask_paths=mask_groups, transform=transform, max_pixels=max_pixels)


def load_busi(
    root: str | os.PathLike[str] | None = None,
    *,
    dataset_dir: str | os.PathLike[str] | None = None,
    classes: Sequence[str] = ("benign", "malignant"),
    test_fraction: float = 0.2,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = 256,
    channels: int = 1,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> FederatedDataset:
    """BUSI as a single-site :class:`FederatedDataset` (client ``"BUSI"``), stratified split.

    FedMix trains on the lesion images (benign, malignant) and adds the normal images only to
    clients without labels; so the default ``classes`` leave ``normal`` out. The split is
    ``train_test_split(stratify=labels, test_size=test_fraction, random_state=seed)``; the
    FedMix authors' own 5-fold file is not public in a plain format.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, float | int) or not (
        0 < test_fraction < 1
    ):
        raise ValueError(f"load_busi: 'test_fraction' must be a float in (0, 1), "
                         f"got {test_fraction!r}.")
    everything = busi_dataset(root, dataset_dir=dataset_dir, classes=classes,
                              image_size=image_size, channels=channels, transform=transform)
    labels = everything.labels.numpy()
    indices = np.arange(len(everything))
    train_idx, test_idx = train_test_split(indices, test_size=test_fraction, random_state=seed,
                                           stratify=labels)
    return FederatedDataset(
        name="BUSI",
        train={0: everything.subset(np.sort(train_idx))},
        test={0: everything.subset(np.sort(test_idx))},
        class_names=tuple(classes),
        client_names=("BUSI",),
        info={"source": "BUSI (Al-Dhabyani et al. 2020)", "seed": seed,
              "test_fraction": test_fraction},
    )


def paired_folder_dataset(
    images_dir: str | os.PathLike[str],
    masks_dir: str | os.PathLike[str],
    *,
    label: int = 0,
    mask_suffix: str = "",
    image_size: int | tuple[int, int] | None = 256,
    channels: int = 1,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageFileDataset:
    """Images in one folder, masks in another, paired by file stem (+ ``mask_suffix``).

    For BUSIS and UDIAT once obtained from their authors (e.g. ``original/`` and ``GT/`` with
    equal file names). Every image needs its mask and every mask its image; all items get
    class ``label`` (segmentation data carry no class in FedMix).
    """
    images_dir = require_dir(Path(images_dir), "image folder")
    masks_dir = require_dir(Path(masks_dir), "mask folder")

    def by_stem(folder: Path, suffix: str) -> dict[str, Path]:
        found = {}
        for file in folder.iterdir():
            if file.is_file() and file.suffix.lower() in _IMAGE_SUFFIXES:
                stem = file.stem
                if suffix and stem.endswith(suffix):
                    stem = stem[: -len(suffix)]
                found[stem] = file
        return found

    images = by_stem(images_dir, "")
    masks = by_stem(masks_dir, mask_suffix)
    if set(images) != set(masks):
        only_images = sorted(set(images) - set(masks))
        only_masks = sorted(set(masks) - set(images))
        detail = (f"image {images[only_images[0]].name!r} has no mask in {masks_dir}"
                  if only_images else
                  f"mask {masks[only_masks[0]].name!r} has no image in {images_dir}")
        raise DataFormatError(f"{images_dir}: images and masks do not pair up: {detail}.")
    stems = sorted(images, key=natural_key)
    return ImageFileDataset([images[s] for s in stems], [label] * len(stems),
                            image_size=image_size, channels=channels,
                            mask_paths=[[masks[s]] for s in stems], transform=transform,
                            max_pixels=max_pixels)
