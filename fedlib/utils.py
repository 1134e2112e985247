"""Seeding, device choice and environment report."""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch


def seed_everything(seed: int, *, threads: int | None = 1, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; by default use one CPU thread and deterministic kernels.

    One thread and deterministic algorithms make a CPU run bit-for-bit repeatable on the same
    machine, which is what the book's reproducibility check (nbval) relies on.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed_everything: 'seed' must be an int >= 0, got {seed!r}.")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds legacy global-state users too
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def device(prefer: str | None = None) -> torch.device:
    """CUDA when present (e.g. Colab with a GPU), else CPU; ``prefer`` forces one."""
    if prefer is not None:
        if prefer not in ("cpu", "cuda"):
            raise ValueError(f"device: 'prefer' must be 'cpu', 'cuda' or None, got {prefer!r}.")
        if prefer == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: 'prefer' is 'cuda' but no CUDA device is available.")
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def print_config() -> None:
    """Print versions and the compute setup, for bug reports and the top of every chapter."""
    from fedlib._version import __version__

    rows = [
        ("fedlib", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("numpy", np.__version__),
        ("device", str(device())),
        ("torch threads", str(torch.get_num_threads())),
    ]
    for module in ("pandas", "plotly", "sklearn"):
        try:
            mod = __import__(module)
            rows.append((module, getattr(mod, "__version__", "?")))
        except ImportError:
            rows.append((module, "not installed"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
