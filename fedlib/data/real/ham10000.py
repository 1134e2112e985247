"""HAM10000 by acquisition source, with lesion masks (the FedMix skin-lesion setting).

Native files (as ``data_scripts/ham10000.py`` leaves them under ``<root>/ham10000``):

- ``HAM10000_metadata.csv`` with columns lesion_id, image_id, dx, dx_type, age, sex,
  localization, dataset; ``dataset`` is the source: ``vidir_molemax``, ``vidir_modern``,
  ``rosendahl``, ``vienna_dias``;
- images ``<image_id>.jpg`` in ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/``
  (or one ``HAM10000_images/`` folder);
- lesion masks ``<image_id>_segmentation.png`` in ``HAM10000_segmentations_lesion_tschandl/``.

References: Tschandl, Rosendahl & Kittler, "The HAM10000 dataset", Scientific Data 5, 180161
(2018), doi:10.7910/DVN/DBW86T; FedMix (Wicaksana et al., IEEE TMI 2023, arXiv:2205.01840) uses
the four sources as four clients with a random 80/20 split per client.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from fedlib.data.base import FederatedDataset
from fedlib.data.real._io import (
    DEFAULT_MAX_PIXELS,
    DataFormatError,
    layout_hint,
    missing_files_error,
    read_csv_columns,
)
from fedlib.data.real.datasets import ImageFileDataset
from fedlib.data.root import data_root

__all__ = ["HAM10000_CLASSES", "HAM10000_SOURCES", "load_ham10000"]

HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM10000_SOURCES = ("rosendahl", "vidir_modern", "vienna_dias", "vidir_molemax")
"""The four sources in FedMix's client order."""

HAM10000_METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dataset")
_IMAGE_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images")
_MASK_FOLDER = "HAM10000_segmentations_lesion_tschandl"
_HINT = "Prepare the data with: python data_scripts/ham10000.py"


def _index_images(folders: Sequence[Path]) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(".jpg") and entry.is_file():
                    index.setdefault(entry.name[:-4], Path(entry.path))
    return index


def _split_indices(
    indices: np.ndarray, groups: np.ndarray | None, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if groups is None:
        train, test = train_test_split(indices, test_size=test_fraction, random_state=seed)
        return np.asarray(train), np.asarray(test)
    unique_groups = np.array(list(dict.fromkeys(groups.tolist())))
    train_groups, _ = train_test_split(unique_groups, test_size=test_fraction, random_state=seed)
    in_train = np.isin(groups, train_groups)
    return indices[in_train], indices[~in_train]


def load_ham10000(
    root: str | os.PathLike[str] | None = None,
    *,
    dataset_dir: str | os.PathLike[str] | None = None,
    sources: Sequence[str] = HAM10000_SOURCES,
    image_size: int | tuple[int, int] | None = 256,
    channels: int = 3,
    with_masks: bool = True,
    test_fraction: float = 0.2,
    split_by: str = "image",
    seed: int = 30448,
    metadata_csv: str | os.PathLike[str] | None = None,
    images_dirs: Sequence[str | os.PathLike[str]] | None = None,
    masks_dir: str | os.PathLike[str] | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FederatedDataset:
    """HAM10000 with one client per source, optionally with lesion masks.

    Parameters
    ----------
    root : path, optional
        The data root (see :func:`~fedlib.data.root.data_root`); the files are looked up in
        ``<root>/ham10000``.
    dataset_dir : path, optional
        The folder with the native files, if not ``<root>/ham10000``.
    sources : sequence of str
        Sources to use, in client order (default: FedMix's rosendahl, vidir_modern,
        vienna_dias, vidir_molemax).
    image_size : int or (H, W) or None
        Resize target (FedMix: 256, then a random 224 crop in training).
    channels : {1, 3}
        3 = RGB (native); 1 = grey, as the FedMix code reads the images.
    with_masks : bool
        Attach ``<image_id>_segmentation.png`` masks (``load_mask``, ``materialize``).
    test_fraction, seed : float, int
        Per-client random split: ``sklearn.model_selection.train_test_split`` on the client's
        images in metadata order with ``random_state=seed``; the defaults (0.2, 30448) are the
        FedMix code's.
    split_by : {"image", "lesion"}
        ``"image"`` as the FedMix code (images of one lesion may fall on both sides);
        ``"lesion"`` keeps all images of a lesion on one side.
    metadata_csv, images_dirs, masks_dir : path, optional
        Override the default locations in the dataset folder.

    Returns
    -------
    FederatedDataset
        Classes akiec, bcc, bkl, df, mel, nv, vasc (the ``dx`` codes, alphabetical); client names
        are the sources. Images are decoded lazily.
    """
    owner = "load_ham10000"
    if split_by not in ("image", "lesion"):
        raise ValueError(f"{owner}: 'split_by' must be one of 'image', 'lesion', got {split_by!r}.")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, float | int) or not (
        0 < test_fraction < 1
    ):
        raise ValueError(f"{owner}: 'test_fraction' must be a float in (0, 1), "
                         f"got {test_fraction!r}.")
    unknown_sources = [s for s in sources if s not in HAM10000_SOURCES]
    if not sources or unknown_sources:
        raise ValueError(f"{owner}: 'sources' must be a non-empty subset of "
                         f"{', '.join(HAM10000_SOURCES)}, got {list(sources)!r}.")

    root = Path(dataset_dir) if dataset_dir is not None else data_root(root) / "ham10000"
    meta_path = Path(metadata_csv) if metadata_csv is not None else root / "HAM10000_metadata.csv"
    meta = read_csv_columns(meta_path, HAM10000_METADATA_COLUMNS, what="HAM10000 metadata CSV",
                            dtype={c: str for c in HAM10000_METADATA_COLUMNS})
    bad_dx = sorted(set(meta["dx"]) - set(HAM10000_CLASSES))
    if bad_dx:
        raise DataFormatError(f"{meta_path}: column 'dx' holds unknown class(es) {bad_dx[:5]}; "
                              f"expected {', '.join(HAM10000_CLASSES)}.")
    if meta["image_id"].duplicated().any():
        raise DataFormatError(f"{meta_path}: image_id "
                              f"{meta['image_id'][meta['image_id'].duplicated()].iloc[0]!r} "
                              "appears more than once.")
    meta = meta[meta["dataset"].isin(list(sources))].reset_index(drop=True)

    if images_dirs is None:
        folders = [root / name for name in _IMAGE_FOLDERS if (root / name).is_dir()]
        if not folders:
            hints = [h for h in (layout_hint(root / name) for name in _IMAGE_FOLDERS) if h]
            raise FileNotFoundError(
                f"HAM10000 image folder not found: none of {', '.join(_IMAGE_FOLDERS)} in "
                f"{root}. " + (f"{hints[0]} " if hints else "") + _HINT
            )
    else:
        folders = [Path(p) for p in images_dirs]
        absent = [p for p in folders if not p.is_dir()]
        if absent:
            raise missing_files_error(absent, "HAM10000 image folder(s)", _HINT)
    index = _index_images(folders)
    missing_ids = [i for i in meta["image_id"] if i not in index]
    if missing_ids:
        raise missing_files_error([folders[0] / f"{i}.jpg" for i in missing_ids],
                                  "HAM10000 image file(s)", _HINT)
    paths = [index[i] for i in meta["image_id"]]

    mask_paths = None
    if with_masks:
        mask_folder = Path(masks_dir) if masks_dir is not None else root / _MASK_FOLDER
        mask_paths = [[mask_folder / f"{i}_segmentation.png"] for i in meta["image_id"]]
        absent_masks = [group[0] for group in mask_paths if not group[0].is_file()]
        if absent_masks:
            raise missing_files_error(absent_masks, "HAM10000 mask file(s)", _HINT)

    labels = meta["dx"].map({c: k for k, c in enumerate(HAM10000_CLASSES)}).to_numpy(np.int64)
    everything = ImageFileDataset(paths, labels, image_size=image_size, channels=channels,
                                  mask_paths=mask_paths, transform=transform,
                                  max_pixels=max_pixels)
    train, test = {}, {}
    for client, source in enumerate(sources):
        indices = np.flatnonzero(meta["dataset"].to_numpy() == source)
        if indices.size < 2:
            raise DataFormatError(f"{meta_path}: source {source!r} has {indices.size} image(s); "
                                  "a train/test split needs at least 2.")
        groups = meta["lesion_id"].to_numpy()[indices] if split_by == "lesion" else None
        train_idx, test_idx = _split_indices(indices, groups, test_fraction, seed)
        train[client] = everything.subset(train_idx)
        test[client] = everything.subset(test_idx)
    return FederatedDataset(
        name="HAM10000 by source",
        train=train,
        test=test,
        class_names=HAM10000_CLASSES,
        client_names=tuple(sources),
        info={"source": "HAM10000 (Harvard Dataverse doi:10.7910/DVN/DBW86T)",
              "split_by": split_by, "seed": seed, "test_fraction": test_fraction,
              "metadata_csv": str(meta_path)},
    )
