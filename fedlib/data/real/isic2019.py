"""ISIC-2019 with FLamby's Fed-ISIC2019 centre split (six acquisition centres = six clients).

Native files (as ``data_scripts/isic2019.py`` leaves them under ``<root>/isic2019``):

- ``ISIC_2019_Training_GroundTruth.csv``: column ``image`` and one-hot columns
  MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK (one 1.0 per row);
- a folder of ``<image>.jpg`` files: ``ISIC_2019_Training_Input_preprocessed`` (FLamby
  preprocessing: shorter side 224 px, Shades-of-Grey colour constancy, power 6) when present,
  else the raw ``ISIC_2019_Training_Input``;
- FLamby's split file ``train_test_split`` (a CSV without suffix; ``train_test_split.csv`` is
  accepted too) with at least the columns ``image``, ``center`` (0..5) and ``fold``
  (``train``/``test``). FLamby's file also carries the one-hot columns and ``target``; the labels
  here are taken from the ground-truth CSV.

Reference: Ogier du Terrail et al., "FLamby: Datasets and Benchmarks for Cross-Silo Federated
Learning in Realistic Healthcare Settings", NeurIPS 2022 Datasets and Benchmarks,
arXiv:2210.04620; Combalia et al., "BCN20000", arXiv:1908.02288 (ISIC 2019 data).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedlib.data.base import FederatedDataset
from fedlib.data.real._io import (
    DEFAULT_MAX_PIXELS,
    DataFormatError,
    missing_files_error,
    read_csv_columns,
    require_dir,
)
from fedlib.data.real.datasets import ImageFileDataset
from fedlib.data.root import data_root
from fedlib.data.templates import ISIC2019_CENTRES, ISIC2019_CLASSES

__all__ = ["ISIC2019_GROUNDTRUTH_COLUMNS", "isic2019_labels", "load_isic2019"]

ISIC2019_GROUNDTRUTH_COLUMNS = (*ISIC2019_CLASSES, "UNK")
_HINT = "Prepare the data with: python data_scripts/isic2019.py"


def isic2019_labels(groundtruth_csv: str | os.PathLike[str]) -> dict[str, int]:
    """Image id -> class index (order MEL, NV, BCC, AK, BKL, DF, VASC, SCC) from the one-hot CSV.

    Every row must have exactly one 1 among the nine columns; rows labelled UNK are left out
    (FLamby's eight classes do not include it).
    """
    path = Path(groundtruth_csv)
    frame = read_csv_columns(path, ("image", *ISIC2019_GROUNDTRUTH_COLUMNS),
                             what="ISIC-2019 ground-truth CSV", dtype={"image": str})
    onehot = frame[list(ISIC2019_GROUNDTRUTH_COLUMNS)].to_numpy(dtype=np.float64)
    valid = np.isin(onehot, (0.0, 1.0)).all(axis=1) & (onehot.sum(axis=1) == 1)
    if not valid.all():
        bad = frame["image"][~valid].tolist()
        raise DataFormatError(
            f"{path}: {len(bad)} row(s) are not one-hot over "
            f"{', '.join(ISIC2019_GROUNDTRUTH_COLUMNS)} (first: {', '.join(map(str, bad[:3]))})."
        )
    duplicated = frame["image"][frame["image"].duplicated()]
    if len(duplicated):
        raise DataFormatError(f"{path}: image {duplicated.iloc[0]!r} appears more than once.")
    classes = onehot.argmax(axis=1)
    keep = classes < len(ISIC2019_CLASSES)  # drop UNK
    return dict(zip(frame["image"][keep], classes[keep].tolist(), strict=True))


def _default_split_file(root: Path) -> Path:
    for name in ("train_test_split", "train_test_split.csv"):
        if (root / name).is_file():
            return root / name
    return root / "train_test_split"


def _default_images_dir(root: Path) -> Path:
    preprocessed = root / "ISIC_2019_Training_Input_preprocessed"
    return preprocessed if preprocessed.is_dir() else root / "ISIC_2019_Training_Input"


def load_isic2019(
    root: str | os.PathLike[str] | None = None,
    *,
    dataset_dir: str | os.PathLike[str] | None = None,
    image_size: int | tuple[int, int] | None = 224,
    split_file: str | os.PathLike[str] | None = None,
    groundtruth_csv: str | os.PathLike[str] | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FederatedDataset:
    """Fed-ISIC2019: one client per acquisition centre, FLamby's train/test split.

    Parameters
    ----------
    root : path, optional
        The data root (see :func:`~fedlib.data.root.data_root`); the files are looked up in
        ``<root>/isic2019``.
    dataset_dir : path, optional
        The folder with the native files, if not ``<root>/isic2019``.
    image_size : int or (H, W) or None
        Images are resized to this size (224 x 224 as in the FedNPR/FCA code); None keeps the
        file's size (FLamby's preprocessed images are 224 px on the shorter side only).
    split_file, groundtruth_csv, images_dir : path, optional
        Override the default locations in the dataset folder.
    transform : callable, optional
        Applied to each image tensor (float32 (3, H, W) in [0, 1]).

    Returns
    -------
    FederatedDataset
        Clients 0..5 = centres BCN, HAM_vidir_molemax, HAM_vidir_modern, HAM_rosendahl, MSK,
        HAM_vienna_dias (FLamby's ``center`` ids); classes MEL, NV, BCC, AK, BKL, DF, VASC, SCC.
        Images are decoded lazily; ``labels`` come from the CSV.
    """
    root = Path(dataset_dir) if dataset_dir is not None else data_root(root) / "isic2019"
    split_path = Path(split_file) if split_file is not None else _default_split_file(root)
    truth_path = (Path(groundtruth_csv) if groundtruth_csv is not None
                  else root / "ISIC_2019_Training_GroundTruth.csv")
    image_dir = Path(images_dir) if images_dir is not None else _default_images_dir(root)

    split = read_csv_columns(split_path, ("image", "center", "fold"),
                             what="FLamby ISIC-2019 split file", dtype={"image": str})
    if split.empty:
        raise DataFormatError(f"{split_path}: the split file lists no image (a header only); "
                              f"FLamby's file has 23,247 rows. {_HINT}")
    folds = set(split["fold"].astype(str))
    if not folds <= {"train", "test"}:
        raise DataFormatError(f"{split_path}: column 'fold' must hold 'train' or 'test', found "
                              f"{sorted(folds - {'train', 'test'})[:5]}.")
    if split["image"].duplicated().any():
        raise DataFormatError(f"{split_path}: image "
                              f"{split['image'][split['image'].duplicated()].iloc[0]!r} "
                              "appears more than once.")
    centres = split["center"]
    if not np.issubdtype(centres.dtype, np.integer):
        name_to_id = {name: k for k, name in enumerate(ISIC2019_CENTRES)}
        unknown = sorted(set(centres.astype(str)) - set(name_to_id))
        if unknown:
            raise DataFormatError(f"{split_path}: column 'center' must hold centre ids 0..5 or "
                                  f"the names {', '.join(ISIC2019_CENTRES)}; found {unknown[:5]}.")
        centres = centres.astype(str).map(name_to_id)
    centre_ids = sorted(int(c) for c in set(centres))

    labels_by_image = isic2019_labels(truth_path)
    unlabelled = [img for img in split["image"] if img not in labels_by_image]
    if unlabelled:
        raise DataFormatError(
            f"{split_path}: {len(unlabelled)} image(s) have no MEL..SCC label in {truth_path} "
            f"(first: {', '.join(unlabelled[:3])})."
        )
    require_dir(image_dir, "ISIC-2019 image folder", _HINT)
    paths = [image_dir / f"{img}.jpg" for img in split["image"]]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise missing_files_error(missing, "ISIC-2019 image file(s)", _HINT)

    labels = np.array([labels_by_image[img] for img in split["image"]], dtype=np.int64)
    everything = ImageFileDataset(paths, labels, image_size=image_size, channels=3,
                                  transform=transform, max_pixels=max_pixels)
    fold = split["fold"].astype(str).to_numpy()
    centre_array = np.asarray(centres, dtype=np.int64)
    train, test = {}, {}
    for client, centre in enumerate(centre_ids):
        in_centre = centre_array == centre
        train[client] = everything.subset(np.flatnonzero(in_centre & (fold == "train")))
        test[client] = everything.subset(np.flatnonzero(in_centre & (fold == "test")))
    client_names = tuple(
        ISIC2019_CENTRES[c] if 0 <= c < len(ISIC2019_CENTRES) else f"centre {c}"
        for c in centre_ids
    )
    return FederatedDataset(
        name="Fed-ISIC2019",
        train=train,
        test=test,
        class_names=ISIC2019_CLASSES,
        client_names=client_names,
        info={"source": "ISIC 2019 with FLamby's centre split", "split_file": str(split_path),
              "images_dir": str(image_dir)},
    )
