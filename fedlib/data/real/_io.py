"""Safe file reading shared by the real-data loaders.

Every error names the file and what is wrong with it. Images are decoded with a pixel limit
checked from the header before the full decode (a decompression bomb never reaches memory), and
anything written (preprocessed images, converted split files) goes to a temporary file that is
renamed only after the write succeeded, so nothing partial is ever left behind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from fedlib._atomic import atomic_write, atomic_write_bytes

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DataFormatError",
    "atomic_write_bytes",
    "atomic_save_image",
    "image_to_tensor",
    "layout_hint",
    "mask_to_tensor",
    "missing_files_error",
    "natural_key",
    "read_csv_columns",
    "read_image",
    "require_dir",
    "require_file",
]

# 100 megapixels: an ISIC-2019 original is at most ~ 6000 x 4000 = 24 MP; a DICOM CT slice 0.26 MP.
DEFAULT_MAX_PIXELS = 100_000_000


class DataFormatError(ValueError):
    """A data file exists but its content is not what the loader expects."""


def layout_hint(path: Path) -> str:
    """What was found near a missing ``path``, and what to do (empty if nothing useful).

    Looks for the usual unpacking mistakes: a name that differs only in case
    (``ham10000_images_part_1``), and the file or folder one folder too deep
    (``Dataset_BUSI_with_GT/Dataset_BUSI_with_GT/benign``, a Kaggle download nested in its own
    folder). The parent folders are searched the same way when they are missing too.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return layout_hint(parent) if parent != path and str(parent) not in ("", ".") else ""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return ""
    for entry in entries:
        if entry.name != path.name and entry.name.lower() == path.name.lower():
            return (f"Found {entry} instead: names are case-sensitive; rename it to "
                    f"{path.name}.")
    for entry in sorted(entries):
        if entry.is_dir() and (entry / path.name).exists():
            return (f"Found it one folder deeper, at {entry / path.name}: move the contents of "
                    f"{entry} up into {parent} (or point the loader at {entry}).")
    return ""


def _require(path: Path, what: str, hint: str, exists) -> Path:
    path = Path(path)
    if not exists(path):
        message = f"{what} not found: {path}"
        layout = layout_hint(path)
        if layout:
            message += f". {layout}"
        if hint:
            message += f". {hint}"
        raise FileNotFoundError(message)
    return path


def require_file(path: Path, what: str, hint: str = "") -> Path:
    """Return ``path`` if it is a file, else raise ``FileNotFoundError`` naming it and ``what``."""
    return _require(path, what, hint, Path.is_file)


def require_dir(path: Path, what: str, hint: str = "") -> Path:
    """Return ``path`` if it is a folder, else raise ``FileNotFoundError`` naming it."""
    return _require(path, what, hint, Path.is_dir)


def missing_files_error(paths: Sequence[Path], what: str, hint: str = "") -> FileNotFoundError:
    """One error for many missing files: the count and the first five paths."""
    shown = ", ".join(str(p) for p in paths[:5])
    more = f" (and {len(paths) - 5} more)" if len(paths) > 5 else ""
    message = f"{len(paths)} {what} not found: {shown}{more}"
    layout = layout_hint(Path(paths[0])) if paths else ""
    if layout:
        message += f". {layout}"
    if hint:
        message += f". {hint}"
    return FileNotFoundError(message)


def read_csv_columns(
    path: Path, required: Iterable[str], *, what: str = "CSV file", **read_kwargs
) -> pd.DataFrame:
    """Read a CSV and check that every ``required`` column is present.

    Raises ``FileNotFoundError`` for a missing file and :class:`DataFormatError` naming the file,
    the missing columns and the columns found otherwise.
    """
    path = require_file(path, what)
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the {what} is empty (0 bytes).")
    try:
        frame = pd.read_csv(path, **read_kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataFormatError(f"{path}: cannot be parsed as a {what} ({error}).") from error
    required = list(required)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataFormatError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; "
            f"found {', '.join(map(repr, map(str, frame.columns)))}."
        )
    return frame


def read_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file, refusing huge or corrupt files.

    The size is read from the header first; an image larger than ``max_pixels`` pixels is refused
    before any pixel is decoded. A file that cannot be identified or decoded (truncated, not an
    image) raises :class:`DataFormatError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise DataFormatError(
                    f"{path}: image of {width} x {height} pixels exceeds the limit of "
                    f"{max_pixels} pixels (raise 'max_pixels' if the file is trusted)."
                )
            image.load()
            return image.copy()
    except DataFormatError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError
            ) as error:
        raise DataFormatError(f"{path}: corrupt or unreadable image ({error}).") from error


def _resize(image: Image.Image, size: tuple[int, int] | None, resample: int) -> Image.Image:
    if size is None or image.size == (size[1], size[0]):
        return image
    return image.resize((size[1], size[0]), resample=resample)


def image_to_tensor(
    image: Image.Image, *, channels: int, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """A PIL image as a float32 tensor of shape (channels, H, W) with values in [0, 1].

    ``size = (H, W)`` resizes bilinearly. 8-bit images are divided by 255, 16-bit grey images
    by 65535; ``"F"`` (float) images, as produced by CT windowing, are taken as already in
    [0, 1] and clipped.
    """
    if image.mode == "F":
        if channels != 1:
            raise ValueError(f"image_to_tensor: a float image has 1 channel, asked for {channels}.")
        array = np.asarray(_resize(image, size, Image.Resampling.BILINEAR), dtype=np.float32)
        array = np.clip(array, 0.0, 1.0)[None]
    elif image.mode in ("I", "I;16", "I;16L", "I;16B"):
        # 16-bit grey (e.g. some ultrasound PNGs): scale by 65535; convert("L") would clip at 255
        array = np.asarray(image, dtype=np.float32) / 65535.0
        grey = Image.fromarray(np.clip(array, 0.0, 1.0).astype(np.float32))
        array = np.asarray(_resize(grey, size, Image.Resampling.BILINEAR), dtype=np.float32)
        array = np.repeat(array[None], channels, axis=0)
    else:
        image = image.convert("L" if channels == 1 else "RGB")
        array = np.asarray(_resize(image, size, Image.Resampling.BILINEAR), dtype=np.float32)
        array = array / 255.0
        array = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def mask_to_tensor(image: Image.Image, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A mask image as a binary float32 tensor (1, H, W): foreground where the grey value > 127.

    Resized with nearest-neighbour sampling so that it stays binary.
    """
    image = _resize(image.convert("L"), size, Image.Resampling.NEAREST)
    array = (np.asarray(image) > 127).astype(np.float32)
    return torch.from_numpy(array[None].copy())


def natural_key(text: str) -> list[int | str]:
    """Sort key that orders ``"benign (2)"`` before ``"benign (10)"``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def atomic_save_image(image: Image.Image, path: Path, **save_kwargs) -> None:
    """Save a PIL image atomically; the format follows the suffix of ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"atomic_save_image: unknown image suffix {path.suffix!r} in {path}.")
    atomic_write(path, lambda stream: image.save(stream, format=image_format, **save_kwargs))
