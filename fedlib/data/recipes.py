"""The papers' federations as data: which sources or sites, in which client order, how large.

Two recipes of the FedMix segmentation settings (``fedmix.md`` §1), used by the synthetic
generators and by :func:`fedlib.data.segmentation_view`, and the single home of their tables:

* **HAM10000 by acquisition source** (skin lesions): four clients in FedMix's order
  Rosendahl, ViDIR-modern, Vienna-Dias, ViDIR-molemax (:data:`HAM10000_SOURCES`, named as in
  the ``dataset`` column of ``HAM10000_metadata.csv``, so the real loader
  :func:`fedlib.data.real.load_ham10000` reads the same names), with the source sizes
  :data:`HAM10000_SOURCE_SIZES` (FedMix splits each 80/20) and, for SynthDerm, the ISIC-2019
  centre that stands for each source (:func:`ham10000_centres`).
* **Breast ultrasound** (BUS): three clients BUSI, BUSIS, UDIAT with FedMix's fold-1 train/test
  sizes and each dataset's own benign/malignant mix (:data:`BUS_TRAIN_COUNTS`,
  :data:`BUS_TEST_COUNTS`; the table and its sources are in :mod:`fedlib.data.synthbus`), and
  BUSI's normal frames, which FedMix adds to the unlabeled clients only
  (:func:`bus_normal_clients`).

Imports only the count-table helpers of :mod:`fedlib.data` (templates and partitions), so the
generators and the views can all import it.

References: Tschandl, Rosendahl & Kittler, "The HAM10000 dataset", Scientific Data 5, 180161
(2018); Wicaksana et al., "FedMix: Mixed supervised federated learning for medical image
segmentation", IEEE TMI 2023, arXiv:2205.01840.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedlib.data.partitions import split_count_table
from fedlib.data.templates import ISIC2019_CENTRES, scale_template, site_template

__all__ = [
    "BUSI_NORMAL_COUNT",
    "BUS_CLASSES",
    "BUS_CLASSES_WITH_NORMAL",
    "BUS_SITES",
    "BUS_TEST_COUNTS",
    "BUS_TRAIN_COUNTS",
    "HAM10000_SOURCES",
    "HAM10000_SOURCE_SIZES",
    "bus_counts",
    "bus_normal_clients",
    "ham10000_centres",
    "ham10000_client_names",
    "ham10000_counts",
]

# --------------------------------------------------------------------------- HAM10000

HAM10000_SOURCES = ("rosendahl", "vidir_modern", "vienna_dias", "vidir_molemax")
"""HAM10000's four acquisition sources in FedMix's client order (``dataset`` column names)."""

HAM10000_SOURCE_SIZES = (2259, 3363, 439, 3954)
"""Images per source, in the order of :data:`HAM10000_SOURCES` (10,015 in all)."""


def ham10000_client_names() -> tuple[str, ...]:
    """Client names of the HAM10000 sources: the ISIC-2019 centre names ``"HAM_<source>"``."""
    return tuple(f"HAM_{source}" for source in HAM10000_SOURCES)


def ham10000_centres() -> np.ndarray:
    """The ISIC-2019 centre of each HAM10000 source (its row of ``site_template("isic2019")``
    and its SynthDerm site style), in the order of :data:`HAM10000_SOURCES`: ``[3, 2, 5, 1]``."""
    return np.array([ISIC2019_CENTRES.index(name) for name in ham10000_client_names()])


def ham10000_counts(scale: float, test_frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) class counts of the four HAM10000-like sources, ISIC-2019 class order.

    Cell totals ``round(scale * row_c * size / sum(row))`` from each source's ISIC-2019
    training row (present classes keep >= 1 image), split per cell with
    :func:`fedlib.data.partitions.split_count_table`.
    """
    isic = site_template("isic2019").astype(np.float64)
    rows = np.stack(
        [
            isic[centre] * size / isic[centre].sum()
            for centre, size in zip(ham10000_centres(), HAM10000_SOURCE_SIZES, strict=True)
        ]
    )
    totals = scale_template(rows, scale)
    return split_count_table(totals, test_frac)


# --------------------------------------------------------------------------- breast ultrasound

BUS_CLASSES = ("benign", "malignant")
BUS_CLASSES_WITH_NORMAL = ("benign", "malignant", "normal")
BUS_SITES = ("BUSI", "BUSIS", "UDIAT")
BUS_TRAIN_COUNTS = np.array([[349, 167], [244, 205], [88, 42]], dtype=np.int64)
"""Training images per (site, class), FedMix fold 1: 516, 449, 130 images."""
BUS_TEST_COUNTS = np.array([[87, 42], [62, 51], [22, 11]], dtype=np.int64)
"""Test images per (site, class), FedMix fold 1: 129, 113, 33 images."""
BUSI_NORMAL_COUNT = 133
"""BUSI's normal frames (no tumour); the other two datasets have none."""


def bus_counts(
    scale: float, *, test_frac: float | None = None, include_normal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled (train, test) class-count tables of the three BUS sites.

    ``scale_template`` of :data:`BUS_TRAIN_COUNTS` and :data:`BUS_TEST_COUNTS`. With
    ``include_normal`` a third class holds BUSI's ``round(133 * scale)`` normal frames (at
    least 1), split like BUSI's tumour frames (129 of 645 to test), at site 0 only. A
    ``test_frac`` re-splits each cell of train + test with
    :func:`fedlib.data.partitions.split_count_table`.
    """
    train = scale_template(BUS_TRAIN_COUNTS, scale)
    test = scale_template(BUS_TEST_COUNTS, scale)
    if include_normal:
        normal = int(max(round(BUSI_NORMAL_COUNT * scale), 1))
        normal_test = int(np.floor(normal * (129 / 645) + 0.5))
        train = np.concatenate([train, [[normal - normal_test], [0], [0]]], axis=1)
        test = np.concatenate([test, [[normal_test], [0], [0]]], axis=1)
    if test_frac is not None:
        train, test = split_count_table(train + test, test_frac)
    return train.astype(np.int64), test.astype(np.int64)


def bus_normal_clients(unlabeled: Sequence[int], scale: float) -> np.ndarray:
    """The client of each of BUSI's normal frames when FedMix adds them to unlabeled clients.

    ``round_half_up(133 * scale)`` frames (at least 1), split into consecutive, nearly equal
    shares (``np.array_split``) over the clients ``unlabeled``, in their order. Returns an
    int64 array with one client id per frame; empty when ``unlabeled`` is.
    """
    if len(unlabeled) == 0:
        return np.zeros(0, dtype=np.int64)
    total = max(int(np.floor(BUSI_NORMAL_COUNT * scale + 0.5)), 1)
    shares = np.array_split(np.arange(total), len(unlabeled))
    return np.concatenate(
        [np.full(len(share), k, dtype=np.int64) for k, share in zip(unlabeled, shares, strict=True)]
    )
