"""Checkpoints written atomically and read weights-only (never arbitrary unpickling).

A save goes through :func:`fedlib._atomic.atomic_write`: a fresh temporary file created
exclusively in the checkpoint's folder, then a rename. A link planted at the target path (or at
any temporary name) is replaced, never followed, and an interrupted save leaves the previous
checkpoint intact. A load that finds an empty or truncated file says so, with the file's size.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from fedlib._atomic import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"

__all__ = ["CHECKPOINT_NAME", "load_checkpoint", "load_weights", "save_checkpoint",
           "save_weights"]


def save_checkpoint(directory: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors, numbers, strings, lists, dicts) to ``directory/checkpoint.pt``.

    The file is written to a new temporary file in ``directory`` and renamed, so a crash never
    leaves half a checkpoint behind and a planted link is never written through.
    """
    return save_weights(Path(directory) / CHECKPOINT_NAME, payload)


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: only tensors and plain containers load."""
    target = Path(directory) / CHECKPOINT_NAME
    if not target.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at {target}.")
    return _load(target, "load_checkpoint", "checkpoint")


def save_weights(path: str | Path, payload: Any) -> Path:
    """``torch.save(payload)`` to ``path`` atomically (e.g. a model's state dict)."""
    return atomic_write(path, lambda stream: torch.save(payload, stream))


def load_weights(path: str | Path) -> Any:
    """Read a file written by :func:`save_weights` with ``weights_only=True``."""
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"load_weights: no weights file at {target}.")
    return _load(target, "load_weights", "weights file")


def _load(target: Path, owner: str, what: str) -> Any:
    size = target.stat().st_size
    if size == 0:
        raise ValueError(
            f"{owner}: {target} is empty (0 bytes): the run that wrote it was probably "
            f"interrupted before the {what} was complete; delete it, or resume from another copy."
        )
    if not zipfile.is_zipfile(target):
        raise ValueError(
            f"{owner}: {target} is truncated or not a fedlib {what} that loads weights-only "
            f"({size} bytes, not a complete torch archive): the file was cut short or "
            "overwritten by something else."
        )
    try:
        return torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler refuses anything else
        raise ValueError(
            f"{owner}: {target} is not a fedlib {what} that loads weights-only ({exc})."
        ) from exc
