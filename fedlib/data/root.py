"""Where real datasets live on disk: one data root for loaders and download scripts."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_DIR_ENV", "data_root"]

DATA_DIR_ENV = "FEDLIB_DATA_DIR"


def data_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds real datasets, one sub-folder per dataset.

    Resolution order: the ``path`` argument, else the environment variable
    ``FEDLIB_DATA_DIR`` (when set and non-empty), else ``~/.cache/fedlib``. ``~`` is expanded.
    The folder is not created here: loaders only read, and the ``data_scripts/`` create it.

    >>> str(data_root("/data/fl"))
    '/data/fl'
    """
    if path is not None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(
                f"data_root: 'path' must be a str, a path or None, got {type(path).__name__}."
            )
        if str(path) == "":
            raise ValueError("data_root: 'path' must not be empty, got ''.")
        return Path(path).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV, "")
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "fedlib"
