"""Preprocessing the papers apply to real images: colour constancy, resizing, CT windowing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fedlib.data.real._io import DEFAULT_MAX_PIXELS, DataFormatError

__all__ = [
    "ICH_BRAIN_WINDOW",
    "dicom_to_hu",
    "read_dicom_windowed",
    "resize_shorter_side",
    "shades_of_grey",
    "window_ct",
]

ICH_BRAIN_WINDOW = (40.0, 80.0)
"""Brain window (level, width) in Hounsfield units, the fedlib default for RSNA-ICH."""


def shades_of_grey(image: np.ndarray, power: float = 6.0) -> np.ndarray:
    """Shades-of-Grey colour constancy: rescale each channel so the illuminant becomes grey.

    The illuminant is estimated per channel by the Minkowski p-norm mean of the pixels
    (Finlayson & Trezzi, Color Imaging Conference 2004)::

        e_c   = ( mean_x I_c(x)^p )^(1/p)             c in {R, G, B}
        ê     = e / ||e||_2
        O_c(x) = I_c(x) / (sqrt(3) * ê_c)

    p = 6 is what FLamby's Fed-ISIC2019 preprocessing uses (Ogier du Terrail et al., NeurIPS 2022
    Datasets and Benchmarks, arXiv:2210.04620). A grey illuminant (ê_c = 1/sqrt(3)) leaves the image
    unchanged; an image of one constant colour c becomes the grey ||c||_2 / sqrt(3).

    Parameters
    ----------
    image : ndarray, shape (H, W, 3)
        ``uint8`` (output ``uint8``, clipped to [0, 255] and truncated as FLamby's cast does) or
        float (output float64, not clipped).
    power : float
        The Minkowski norm p (> 0).

    Notes
    -----
    FLamby casts the float result back to ``uint8`` without clipping, which leaves values above
    255 to the platform's float-to-integer conversion; fedlib clips first.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"shades_of_grey: 'image' must have shape (H, W, 3), got {tuple(image.shape)}."
        )
    if isinstance(power, bool) or not isinstance(power, int | float) or not power > 0:
        raise ValueError(f"shades_of_grey: 'power' must be a float > 0, got {power!r}.")
    pixels = image.astype(np.float64)
    illuminant = np.power(np.mean(np.power(pixels, power), axis=(0, 1)), 1.0 / power)
    norm = np.linalg.norm(illuminant)
    if norm == 0 or np.any(illuminant == 0):
        return image.copy()  # a black channel carries no illuminant estimate: leave as is
    gains = norm / (illuminant * np.sqrt(3.0))
    corrected = pixels * gains
    if image.dtype == np.uint8:
        return np.clip(corrected, 0, 255).astype(np.uint8)
    return corrected


def resize_shorter_side(image: Image.Image, size: int = 224) -> Image.Image:
    """Resize so that the shorter side is ``size`` pixels, keeping the aspect ratio (bilinear).

    As FLamby's ISIC preprocessing: ratio = size / min(W, H), new side = int(side * ratio).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"resize_shorter_side: 'size' must be an int >= 1, got {size!r}.")
    ratio = size / min(image.size)
    new_size = tuple(int(side * ratio) for side in image.size)
    return image.resize(new_size, resample=Image.Resampling.BILINEAR)


def window_ct(hu: np.ndarray, level: float = 40.0, width: float = 80.0) -> np.ndarray:
    """Linear CT window mapping Hounsfield units to [0, 1]::

        w(h) = clip( (h - (level - width/2)) / width, 0, 1 )

    so ``level - width/2`` maps to 0, ``level`` to 0.5 and ``level + width/2`` to 1. The default
    (40, 80) is the brain window used for RSNA-ICH in fedlib; the papers do not state theirs.
    """
    if not width > 0:
        raise ValueError(f"window_ct: 'width' must be a float > 0, got {width!r}.")
    low = level - width / 2.0
    return np.clip((np.asarray(hu, dtype=np.float32) - low) / width, 0.0, 1.0)


def dicom_to_hu(dataset) -> np.ndarray:
    """Pixel values of a CT DICOM dataset in Hounsfield units: ``pixel * RescaleSlope +
    RescaleIntercept`` (slope 1 and intercept 0 when the tags are absent)."""
    pixels = dataset.pixel_array.astype(np.float32)
    slope = float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
    return pixels * slope + intercept


def _import_pydicom():
    try:
        import pydicom
    except ImportError as error:  # pragma: no cover - pydicom is a declared extra
        raise ImportError(
            "Reading DICOM files needs pydicom: pip install 'fedlib[dicom]' (or pydicom)."
        ) from error
    return pydicom


def read_dicom_windowed(
    path: Path,
    *,
    level: float = 40.0,
    width: float = 80.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Read one CT slice and window it: a float (``"F"`` mode) image with values in [0, 1].

    Raises ``FileNotFoundError`` for a missing file and :class:`DataFormatError` naming the file
    when it is not a readable DICOM image or exceeds ``max_pixels``.
    """
    pydicom = _import_pydicom()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DICOM file not found: {path}")
    try:
        dataset = pydicom.dcmread(path)
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        if rows * columns > max_pixels:
            raise DataFormatError(
                f"{path}: DICOM image of {columns} x {rows} pixels exceeds the limit of "
                f"{max_pixels} pixels."
            )
        hu = dicom_to_hu(dataset)
    except DataFormatError:
        raise
    except Exception as error:  # pydicom raises many types for broken files
        raise DataFormatError(f"{path}: corrupt or unreadable DICOM file ({error}).") from error
    if hu.ndim != 2:
        raise DataFormatError(f"{path}: expected one 2-D slice, got pixel shape {hu.shape}.")
    return Image.fromarray(window_ct(hu, level, width))  # float32 -> mode "F"
