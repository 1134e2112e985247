"""Checkpoints written atomically and read weights-only (never arbitrary unpickling)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(directory: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors, numbers, strings, lists, dicts) to ``directory/checkpoint.pt``.

    The file is written to a temporary name and renamed, so a crash never leaves half a
    checkpoint behind.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    target = path / CHECKPOINT_NAME
    tmp = path / (CHECKPOINT_NAME + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, target)
    return target


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: only tensors and plain containers load."""
    target = Path(directory) / CHECKPOINT_NAME
    if not target.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at {target}.")
    try:
        return torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler refuses anything else
        raise ValueError(
            f"load_checkpoint: {target} is not a fedlib checkpoint that loads weights-only ({exc})."
        ) from exc
