"""Per-site class-count tables of the papers' datasets, and their scaling.

Counts from the authors' split files as tabulated in the evaluation protocol: ISIC-2019 as
FLamby's Fed-ISIC2019 (six acquisition centres, training counts), RSNA-ICH as the FedNPR/FCA
10-client split (train + test) and the near-IID 5-client split (training counts).
"""

from __future__ import annotations

import numpy as np

ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
ISIC2019_CENTRES = (
    "BCN",
    "HAM_vidir_molemax",
    "HAM_vidir_modern",
    "HAM_rosendahl",
    "MSK",
    "HAM_vienna_dias",
)
ICH_CLASSES = ("EDH", "IPH", "IVH", "SAH", "SDH")

_ISIC2019_TRAIN = np.array(
    [
        [2279, 3363, 2245, 606, 923, 97, 87, 330],
        [20, 2977, 2, 0, 96, 23, 45, 0],
        [533, 1470, 174, 20, 379, 40, 64, 11],
        [276, 649, 223, 86, 406, 20, 3, 144],
        [166, 349, 0, 0, 140, 0, 0, 0],
        [58, 276, 5, 0, 6, 4, 2, 0],
    ],
    dtype=np.int64,
)

_ICH10_TOTAL = np.array(
    [
        [0, 0, 1390, 2806, 5042],
        [110, 6903, 0, 2407, 0],
        [111, 1403, 2924, 0, 9534],
        [0, 3038, 0, 4467, 3680],
        [165, 647, 0, 1163, 2285],
        [336, 0, 0, 1293, 2293],
        [673, 1160, 3328, 0, 0],
        [11, 627, 0, 0, 3587],
        [86, 77, 0, 2044, 1197],
        [5, 77, 1272, 537, 1291],
    ],
    dtype=np.int64,
)

# The 5-client split is near-IID: every client holds every class. Only client 0's class counts
# and every client's train size are tabulated; the other rows follow client 0's class shares,
# rounded so that each row sums to its client's train size.
_ICH5_SIZES = np.array([10301, 10463, 12292, 10344, 10972], dtype=np.int64)
_ICH5_CLIENT0 = np.array([165, 2109, 1200, 2373, 4454], dtype=np.int64)

TEMPLATES = ("isic2019", "ich10", "ich5")


def _ich5_train() -> np.ndarray:
    shares = _ICH5_CLIENT0 / _ICH5_CLIENT0.sum()
    rows = [_ICH5_CLIENT0]
    for size in _ICH5_SIZES[1:]:
        raw = shares * size
        row = np.floor(raw).astype(np.int64)
        remainder = int(size - row.sum())
        row[np.argsort(-(raw - row), kind="stable")[:remainder]] += 1
        rows.append(row)
    return np.stack(rows)


def site_template(name: str) -> np.ndarray:
    """The per-site class-count matrix of a paper dataset, shape (clients, classes).

    ``"isic2019"``: training counts of the six ISIC-2019 centres (total 18,597), class order
    MEL, NV, BCC, AK, BKL, DF, VASC, SCC. ``"ich10"``: train + test counts of the 10-client
    RSNA-ICH split (total 67,969), class order EDH, IPH, IVH, SAH, SDH. ``"ich5"``: training
    counts of the near-IID 5-client split.
    """
    if name == "isic2019":
        return _ISIC2019_TRAIN.copy()
    if name == "ich10":
        return _ICH10_TOTAL.copy()
    if name == "ich5":
        return _ich5_train()
    raise ValueError(f"site_template: 'name' must be one of {', '.join(map(repr, TEMPLATES))}, "
                     f"got {name!r}.")


def template_class_names(name: str) -> tuple[str, ...]:
    """Class names in the column order of :func:`site_template`."""
    site_template(name)  # validates the name
    return ISIC2019_CLASSES if name == "isic2019" else ICH_CLASSES


def scale_template(counts: np.ndarray, scale: float, *, min_keep: int = 1) -> np.ndarray:
    """Multiply a count table by ``scale`` and round, keeping rare-but-present cells present.

    ``out = max(round(scale * counts), min_keep)`` where ``counts > 0``, and ``0`` where
    ``counts == 0``: a zero cell stays zero, a present cell keeps at least ``min_keep`` images.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or (counts < 0).any():
        raise ValueError("scale_template: 'counts' must be a 2-D table of counts >= 0.")
    if not (isinstance(scale, int | float) and not isinstance(scale, bool)) or not scale > 0:
        raise ValueError(f"scale_template: 'scale' must be a float > 0, got {scale!r}.")
    if isinstance(min_keep, bool) or not isinstance(min_keep, int | np.integer) or min_keep < 0:
        raise ValueError(f"scale_template: 'min_keep' must be an int >= 0, got {min_keep!r}.")
    scaled = np.rint(counts * float(scale)).astype(np.int64)
    return np.where(counts > 0, np.maximum(scaled, min_keep), 0)
