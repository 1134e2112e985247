"""RSNA intracranial haemorrhage (ICH) slices, single-label subset, with a client split file.

Native files (Kaggle competition ``rsna-intracranial-hemorrhage-detection``, stage 2):

- ``stage_2_train.csv`` with columns ``ID, Label`` and one row per (slice, subtype):
  ``ID_<id>_<subtype>,<0|1>``, subtype in epidural, intraparenchymal, intraventricular,
  subarachnoid, subdural, any;
- DICOM slices ``stage_2_train/ID_<id>.dcm``, or PNGs ``ID_<id>.png`` already windowed by
  ``data_scripts/rsna_ich.py``;
- a client split in the plain JSON/CSV format of :mod:`fedlib.data.real.splits` (the authors'
  pickled ``.npy`` splits are converted once with ``convert_pickled_split``).

As in FedNPR/FCA, only slices with **exactly one** positive subtype are used; classes EDH, IPH,
IVH, SAH, SDH follow RSNA's alphabetical subtype order. DICOMs are windowed with the brain window
(level 40, width 80) after applying RescaleSlope/RescaleIntercept.

References: Flanders et al., "Construction of a machine learning dataset through collaboration:
the RSNA 2019 brain CT hemorrhage challenge", Radiology: AI 2(3), 2020; FedNPR
(arXiv:2407.12446) and FCA (arXiv:2305.00738) for the split and the 128 x 128 input size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedlib.data.base import FederatedDataset
from fedlib.data.real._io import (
    DEFAULT_MAX_PIXELS,
    DataFormatError,
    layout_hint,
    missing_files_error,
    read_csv_columns,
    require_dir,
)
from fedlib.data.real.datasets import ImageFileDataset, read_with
from fedlib.data.real.preprocess import ICH_BRAIN_WINDOW, read_dicom_windowed
from fedlib.data.real.splits import read_client_split
from fedlib.data.root import data_root
from fedlib.data.templates import ICH_CLASSES

__all__ = ["ICH_SUBTYPES", "ich_single_label", "load_rsna_ich", "read_ich_labels"]

ICH_SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
_ALL_SUBTYPES = (*ICH_SUBTYPES, "any")
_HINT = "See: python data_scripts/rsna_ich.py --help"


def read_ich_labels(labels_csv: str | os.PathLike[str]) -> pd.DataFrame:
    """The RSNA label CSV as one row per slice: index ``ID_<id>``, 0/1 columns per subtype.

    Columns: epidural, intraparenchymal, intraventricular, subarachnoid, subdural, any (a
    missing ``any`` column is allowed). Exact duplicate rows (present in the Kaggle file) are
    dropped; conflicting duplicates, unknown subtypes or labels other than 0/1 raise
    :class:`DataFormatError` naming the file.
    """
    path = Path(labels_csv)
    frame = read_csv_columns(path, ("ID", "Label"), what="RSNA-ICH label CSV",
                             dtype={"ID": str})
    parts = frame["ID"].str.rsplit("_", n=1, expand=True)
    if parts.shape[1] != 2 or parts[1].isna().any():
        bad = frame["ID"][parts[1].isna()].iloc[0] if parts.shape[1] == 2 else frame["ID"].iloc[0]
        raise DataFormatError(f"{path}: ID {bad!r} is not of the form ID_<id>_<subtype>.")
    frame = pd.DataFrame({"image": parts[0], "subtype": parts[1], "label": frame["Label"]})
    unknown = sorted(set(frame["subtype"]) - set(_ALL_SUBTYPES))
    if unknown:
        raise DataFormatError(f"{path}: unknown subtype(s) {unknown[:5]}; expected "
                              f"{', '.join(_ALL_SUBTYPES)}.")
    if not frame["label"].isin((0, 1)).all():
        raise DataFormatError(f"{path}: column 'Label' must hold 0 or 1.")
    frame = frame.drop_duplicates()
    clash = frame.duplicated(["image", "subtype"])
    if clash.any():
        row = frame[clash].iloc[0]
        raise DataFormatError(f"{path}: {row['image']}_{row['subtype']} has conflicting labels.")
    table = frame.pivot(index="image", columns="subtype", values="label")
    missing = [s for s in ICH_SUBTYPES if s not in table.columns]
    if missing:
        raise DataFormatError(f"{path}: no rows for subtype(s) {', '.join(missing)}.")
    incomplete = table[list(ICH_SUBTYPES)].isna().any(axis=1)
    if incomplete.any():
        raise DataFormatError(f"{path}: slice {table.index[incomplete][0]!r} lacks a label for "
                              "some subtype.")
    return table.astype(np.int64)


def ich_single_label(table: pd.DataFrame) -> pd.Series:
    """Slice id -> class index (EDH, IPH, IVH, SAH, SDH) for slices with exactly one positive
    subtype; all other slices (none or several positives) are left out."""
    positives = table[list(ICH_SUBTYPES)].to_numpy()
    single = positives.sum(axis=1) == 1
    return pd.Series(positives[single].argmax(axis=1).astype(np.int64),
                     index=table.index[single], name="label")


def _normalise_id(image_id: str) -> str:
    name = Path(image_id).name
    for suffix in (".dcm", ".png"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name if name.startswith("ID_") else f"ID_{name}"


def load_rsna_ich(
    root: str | os.PathLike[str] | None = None,
    *,
    dataset_dir: str | os.PathLike[str] | None = None,
    split_file: str | os.PathLike[str] | None = None,
    labels_csv: str | os.PathLike[str] | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    image_format: str = "auto",
    image_size: int | tuple[int, int] | None = 128,
    window: tuple[float, float] = ICH_BRAIN_WINDOW,
    label_source: str = "csv",
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FederatedDataset:
    """RSNA-ICH single-label slices split across clients by a split file.

    Parameters
    ----------
    root : path, optional
        The data root (see :func:`~fedlib.data.root.data_root`); the files are looked up in
        ``<root>/rsna_ich``.
    dataset_dir : path, optional
        The dataset folder, if not ``<root>/rsna_ich``; it holds ``stage_2_train.csv``, the
        image folder and the converted split files.
    split_file : path, optional
        Plain JSON or CSV split (image id -> client and train/test); default
        ``<dataset_dir>/ich_split_10clients.json`` (the authors' 10-client split as converted
        by ``data_scripts/rsna_ich.py``; ``ich_split_5clients.json`` is the 5-client one).
        Ids may be given with or without the ``ID_`` prefix.
    labels_csv : path, optional
        Default ``<dataset_dir>/stage_2_train.csv``. Not needed with ``label_source="split"``.
    images_dir : path, optional
        Default ``<dataset_dir>/png`` if it exists (windowed by the data script), else
        ``<dataset_dir>/stage_2_train`` (DICOM).
    image_format : {"auto", "png", "dicom"}
        ``"auto"`` picks by the first image of the split found as ``.png`` or ``.dcm``.
    image_size : int or (H, W) or None
        Resize target; 128 as in the FedNPR/FCA code.
    window : (level, width)
        CT window in HU applied to DICOMs (PNGs are taken as already windowed).
    label_source : {"csv", "split"}
        Labels from the RSNA CSV (a split label that disagrees raises an error) or from the
        split file's ``label`` lists.

    Returns
    -------
    FederatedDataset
        Grey images (1, H, W) in [0, 1], classes EDH, IPH, IVH, SAH, SDH; client ``k`` is the
        k-th client of the split file.
    """
    owner = "load_rsna_ich"
    if image_format not in ("auto", "png", "dicom"):
        raise ValueError(f"{owner}: 'image_format' must be one of 'auto', 'png', 'dicom', "
                         f"got {image_format!r}.")
    if label_source not in ("csv", "split"):
        raise ValueError(f"{owner}: 'label_source' must be one of 'csv', 'split', "
                         f"got {label_source!r}.")
    if (not isinstance(window, tuple | list) or len(window) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in window)
            or not window[1] > 0):
        raise ValueError(f"{owner}: 'window' must be a (level, width) pair with width > 0, "
                         f"got {window!r}.")
    root = Path(dataset_dir) if dataset_dir is not None else data_root(root) / "rsna_ich"
    if split_file is None:
        split_file = root / "ich_split_10clients.json"
        if not Path(split_file).is_file():
            nearby = layout_hint(Path(split_file))
            raise FileNotFoundError(
                f"RSNA-ICH client split not found: {split_file}. "
                + (f"{nearby} " if nearby else "")
                + "It is the authors' 10-client split, converted to JSON by `python "
                "data_scripts/rsna_ich.py` (which needs internet once). Offline: copy "
                "ich_split_10clients.json from a machine that ran the script into "
                f"{root}, or pass split_file= (a JSON/CSV split, see "
                "fedlib.data.real.splits)."
            )
    split = read_client_split(split_file)

    if label_source == "split":
        if split.labels is None:
            raise DataFormatError(f"{split_file}: label_source='split' needs a 'label' list for "
                                  "every client.")
        label_of: dict[str, int] = {}
        for part in ("train", "test"):
            for client in split.clients:
                for image, label in zip(split.images[part][client], split.labels[part][client],
                                        strict=True):
                    label_of[_normalise_id(image)] = label
        bad = {i: v for i, v in label_of.items() if not 0 <= v < len(ICH_CLASSES)}
        if bad:
            first = next(iter(bad))
            raise DataFormatError(f"{split_file}: label {bad[first]} of {first} is outside "
                                  f"0..{len(ICH_CLASSES) - 1}.")
    else:
        csv_path = Path(labels_csv) if labels_csv is not None else root / "stage_2_train.csv"
        single = ich_single_label(read_ich_labels(csv_path))
        label_of = single.to_dict()
        all_ids = [_normalise_id(i) for p in ("train", "test") for c in split.clients
                   for i in split.images[p][c]]
        not_single = [i for i in all_ids if i not in label_of]
        if not_single:
            raise DataFormatError(
                f"{split_file}: {len(not_single)} slice(s) are not single-label slices of "
                f"{csv_path} (first: {', '.join(not_single[:3])})."
            )
        if split.labels is not None:
            for part in ("train", "test"):
                for client in split.clients:
                    for image, label in zip(split.images[part][client],
                                            split.labels[part][client], strict=True):
                        if label_of[_normalise_id(image)] != label:
                            raise DataFormatError(
                                f"{split_file}: {part}/{client} gives {image} label {label}, "
                                f"{csv_path} gives {label_of[_normalise_id(image)]}; "
                                "use label_source='split' to trust the split file."
                            )

    if images_dir is not None:
        image_dir = Path(images_dir)
    else:
        image_dir = root / "png" if (root / "png").is_dir() else root / "stage_2_train"
    require_dir(image_dir, "RSNA-ICH image folder", _HINT)
    first_id = next((_normalise_id(i) for p in ("train", "test") for c in split.clients
                     for i in split.images[p][c]), None)
    if first_id is None:
        raise DataFormatError(f"{split_file}: the split lists no images.")
    if image_format == "auto":
        if (image_dir / f"{first_id}.png").is_file():
            image_format = "png"
        elif (image_dir / f"{first_id}.dcm").is_file():
            image_format = "dicom"
        else:
            raise FileNotFoundError(f"RSNA-ICH image not found: neither {first_id}.png nor "
                                    f"{first_id}.dcm in {image_dir}. {_HINT}")
    suffix = ".png" if image_format == "png" else ".dcm"
    reader = None if image_format == "png" else read_with(
        read_dicom_windowed, level=float(window[0]), width=float(window[1])
    )

    train, test = {}, {}
    for k, client in enumerate(split.clients):
        for part, target in (("train", train), ("test", test)):
            ids = [_normalise_id(i) for i in split.images[part][client]]
            paths = [image_dir / f"{i}{suffix}" for i in ids]
            absent = [p for p in paths if not p.is_file()]
            if absent:
                raise missing_files_error(absent, "RSNA-ICH image file(s)", _HINT)
            target[k] = ImageFileDataset(paths, [label_of[i] for i in ids],
                                         image_size=image_size, channels=1, reader=reader,
                                         transform=transform, max_pixels=max_pixels)
    return FederatedDataset(
        name="RSNA-ICH",
        train=train,
        test=test,
        class_names=ICH_CLASSES,
        client_names=tuple(f"client {c}" for c in split.clients),
        info={"source": "RSNA 2019 brain CT haemorrhage (single-label slices)",
              "split_file": str(split_file), "window": tuple(window),
              "image_format": image_format, "label_source": label_source},
    )
