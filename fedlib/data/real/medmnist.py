"""MedMNIST ``.npz`` files (v2/v3, Zenodo record 10519652) as in-memory datasets.

A MedMNIST file holds six arrays: ``train_images``, ``train_labels``, ``val_images``,
``val_labels``, ``test_images``, ``test_labels``; images are ``uint8`` of shape (N, H, W) (grey)
or (N, H, W, 3) (RGB), labels (N, 1). Only the 2-D single-label datasets are supported (not
ChestMNIST, which is multi-label, nor the 3-D ones).

Reference: Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D
biomedical image classification", Scientific Data 10, 41 (2023), arXiv:2110.14795.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from fedlib.data.base import ArrayDataset, FederatedDataset
from fedlib.data.real._io import DataFormatError, require_file
from fedlib.data.real.datasets import federate_by_indices
from fedlib.data.root import data_root

__all__ = [
    "MEDMNIST_CLASSES",
    "MEDMNIST_SIZES",
    "federate_medmnist",
    "load_medmnist",
    "medmnist_dataset",
    "medmnist_class_names",
    "medmnist_path",
]

MEDMNIST_SPLITS = ("train", "val", "test")
MEDMNIST_SIZES = (28, 64, 128, 224)

_ORGAN = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
          "liver", "lung-left", "lung-right", "pancreas", "spleen")
# Label names as published in the MedMNIST package (medmnist/info.py, v3.0.2).
MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "pathmnist": ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma",
                  "colorectal adenocarcinoma epithelium"),
    "dermamnist": ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                   "benign keratosis-like lesions", "dermatofibroma", "melanoma",
                   "melanocytic nevi", "vascular lesions"),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": ("basophil", "eosinophil", "erythroblast", "immature granulocytes",
                   "lymphocyte", "monocyte", "neutrophil", "platelet"),
    "tissuemnist": ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                    "Glomerular endothelial cells", "Interstitial endothelial cells",
                    "Leukocytes", "Podocytes", "Proximal Tubule Segments",
                    "Thick Ascending Limb"),
    "organamnist": _ORGAN,
    "organcmnist": _ORGAN,
    "organsmnist": _ORGAN,
}


def medmnist_class_names(name: str) -> tuple[str, ...]:
    """Class names of a supported 2-D MedMNIST dataset (e.g. ``"dermamnist"``)."""
    if name not in MEDMNIST_CLASSES:
        raise ValueError(
            f"medmnist_class_names: 'name' must be one of {', '.join(sorted(MEDMNIST_CLASSES))}, "
            f"got {name!r}."
        )
    return MEDMNIST_CLASSES[name]


def medmnist_path(name: str, size: int = 28, root: str | os.PathLike[str] | None = None) -> Path:
    """Where ``data_scripts/medmnist.py`` stores a file: ``<root>/medmnist/<name>[_<size>].npz``.

    Size 28 has no suffix, as on Zenodo.
    """
    medmnist_class_names(name)
    if size not in MEDMNIST_SIZES:
        raise ValueError(f"medmnist_path: 'size' must be one of {MEDMNIST_SIZES}, got {size!r}.")
    filename = f"{name}.npz" if size == 28 else f"{name}_{size}.npz"
    return data_root(root) / "medmnist" / filename


def _images_to_tensor(images: np.ndarray, path: Path, key: str) -> torch.Tensor:
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    else:
        raise DataFormatError(
            f"{path}: {key!r} must have shape (N, H, W) or (N, H, W, 1|3), got {images.shape}."
        )
    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    if np.issubdtype(images.dtype, np.floating):
        if images.size and (images.min() < 0 or images.max() > 1):
            raise DataFormatError(f"{path}: float {key!r} must lie in [0, 1].")
        return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    raise DataFormatError(f"{path}: {key!r} must be uint8 or float, got {images.dtype}.")


def _labels_to_tensor(labels: np.ndarray, count: int, path: Path, key: str) -> torch.Tensor:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataFormatError(
            f"{path}: {key!r} must have shape (N,) or (N, 1) (single-label data), got "
            f"{labels.shape}; multi-label MedMNIST (ChestMNIST) is not supported."
        )
    if labels.shape[0] != count:
        raise DataFormatError(f"{path}: {key!r} has {labels.shape[0]} rows, the images {count}.")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise DataFormatError(f"{path}: {key!r} must hold integers >= 0, got {labels.dtype}.")
    return torch.from_numpy(labels.astype(np.int64))


def load_medmnist(
    name_or_path: str | os.PathLike[str],
    *,
    size: int = 28,
    root: str | os.PathLike[str] | None = None,
) -> dict[str, ArrayDataset]:
    """Read a MedMNIST ``.npz`` file into ``{"train", "val", "test"}`` array datasets.

    ``name_or_path`` is a file path (``*.npz``) or a dataset name (``"dermamnist"``), which is
    looked up with :func:`medmnist_path` (``size``, ``root``). Images become float32
    (N, C, H, W) in [0, 1], labels int64 (N,). The file is read with ``allow_pickle=False``.
    Federate the result with :func:`~fedlib.data.real.federate_by_indices`, e.g. with indices
    from ``dirichlet_partition(splits["train"].labels, ...)``. Memory: 4 bytes per pixel value
    (DermaMNIST at 224 px: about 4 GB).
    """
    text = os.fspath(name_or_path)
    path = Path(text) if text.endswith(".npz") or os.sep in text else medmnist_path(
        text, size, root
    )
    require_file(path, "MedMNIST file", "Download it with: python data_scripts/medmnist.py")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataFormatError(f"{path}: not a readable .npz file ({error}).") from error
    except ValueError as error:  # object arrays need pickle, which is refused
        raise DataFormatError(f"{path}: holds arrays that would need unpickling ({error}).") \
            from error
    expected = [f"{s}_{kind}" for s in MEDMNIST_SPLITS for kind in ("images", "labels")]
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise DataFormatError(
            f"{path}: missing key(s) {', '.join(map(repr, missing))}; found "
            f"{', '.join(map(repr, sorted(arrays))) or 'no arrays'}."
        )
    splits = {}
    for split in MEDMNIST_SPLITS:
        images = _images_to_tensor(arrays[f"{split}_images"], path, f"{split}_images")
        labels = _labels_to_tensor(arrays[f"{split}_labels"], images.shape[0], path,
                                   f"{split}_labels")
        splits[split] = ArrayDataset(images, labels)
    return splits


def medmnist_name_from_path(path: str | os.PathLike[str]) -> str | None:
    """``"dermamnist"`` for ``.../dermamnist_64.npz``; None for an unknown file name."""
    match = re.fullmatch(r"([a-z]+mnist)(?:_\d+)?\.npz", Path(path).name)
    return match.group(1) if match and match.group(1) in MEDMNIST_CLASSES else None


def federate_medmnist(
    name_or_path: str | os.PathLike[str],
    client_train_indices,
    *,
    client_test_indices=None,
    test_split: str = "test",
    size: int = 28,
    root: str | os.PathLike[str] | None = None,
) -> FederatedDataset:
    """Load a MedMNIST file and give client k the training rows ``client_train_indices[k]``.

    The test side is the ``test_split`` split (``"test"`` or ``"val"``): the whole split for
    every client, or ``client_test_indices[k]`` rows of it. Class names come from the MedMNIST
    label table when the file name is a known dataset, else ``"0", "1", ...``.
    """
    if test_split not in ("test", "val"):
        raise ValueError(
            f"federate_medmnist: 'test_split' must be one of 'test', 'val', got {test_split!r}."
        )
    splits = load_medmnist(name_or_path, size=size, root=root)
    text = os.fspath(name_or_path)
    name = text if text in MEDMNIST_CLASSES else medmnist_name_from_path(text)
    num_classes = int(max(int(s.labels.max()) for s in splits.values() if len(s)) + 1)
    if name is not None:
        class_names = MEDMNIST_CLASSES[name]
        if num_classes > len(class_names):
            raise DataFormatError(f"{text}: labels go up to {num_classes - 1}, but {name} has "
                                  f"{len(class_names)} classes.")
    else:
        class_names = tuple(str(c) for c in range(num_classes))
    return federate_by_indices(
        name or Path(text).stem,
        splits["train"],
        client_train_indices,
        splits[test_split],
        client_test_indices=client_test_indices,
        class_names=class_names,
        info={"source": "MedMNIST", "file": text},
    )


def medmnist_dataset(
    name: str, *, size: int = 28, root: str | os.PathLike[str] | None = None
) -> FederatedDataset:
    """A MedMNIST dataset as one client (``train`` and ``test`` splits; ``val`` is not used).

    What ``load_dataset("medmnist:<name>")`` reads. MedMNIST has no sites: re-partition it
    (``partition="dirichlet"``, optionally with ``imbalance_factor``) to federate it.
    """
    class_names = medmnist_class_names(name)
    splits = load_medmnist(name, size=size, root=root)
    top = max(int(splits[s].labels.max()) for s in ("train", "test") if len(splits[s])) + 1
    if top > len(class_names):
        raise DataFormatError(f"{medmnist_path(name, size, root)}: labels go up to {top - 1}, "
                              f"but {name} has {len(class_names)} classes.")
    return FederatedDataset(
        name=f"MedMNIST {name}",
        train={0: splits["train"]},
        test={0: splits["test"]},
        class_names=class_names,
        client_names=(name,),
        info={"source": "MedMNIST (Yang et al. 2023)", "size": size},
    )
