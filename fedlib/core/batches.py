"""Mini-batches from in-memory or generic datasets, driven by an explicit generator."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset


def iterate_batches(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield batches of ``(x, y, ...)``.

    Datasets that hold tensors (``images`` and ``labels`` attributes, as
    :class:`fedlib.data.ArrayDataset`) are sliced directly, which is much faster than a
    DataLoader for small images; others go through a single-process DataLoader with the same
    generator, so both paths are deterministic.
    """
    n = len(dataset)
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield images[idx], labels[idx]
        return
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last
    )
    yield from loader
