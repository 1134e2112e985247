"""The one dataset interface every source (synthetic or real) yields.

A :class:`FederatedDataset` maps client ids ``0..K-1`` to a train and a test
:class:`torch.utils.data.Dataset`. Every such dataset exposes ``labels`` (a 1-D ``int64`` tensor),
so class counts and partitions never need to decode an image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ArrayDataset", "FederatedDataset", "dataset_labels"]


class ArrayDataset(Dataset):
    """Images, labels and (optionally) masks and boxes held as tensors in memory.

    Parameters
    ----------
    images : Tensor, shape (N, C, H, W), float32 in [0, 1]
    labels : Tensor, shape (N,), int64
    masks : Tensor, shape (N, 1, H, W), optional
        Binary lesion masks (float32 0/1).
    boxes : Tensor, shape (N, 4), optional
        ``(x0, y0, x1, y1)`` pixel coordinates, inclusive-exclusive.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        masks: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ):
        if images.ndim != 4:
            raise ValueError(
                f"ArrayDataset: 'images' must have shape (N, C, H, W), got {tuple(images.shape)}."
            )
        n = images.shape[0]
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (n,):
            raise ValueError(
                f"ArrayDataset: 'labels' must have shape ({n},) to match 'images', "
                f"got {tuple(labels.shape)}."
            )
        for name, extra in (("masks", masks), ("boxes", boxes)):
            if extra is not None and extra.shape[0] != n:
                raise ValueError(
                    f"ArrayDataset: {name!r} must have {n} rows to match 'images', "
                    f"got {extra.shape[0]}."
                )
        self.images = images
        self.labels = labels
        self.masks = masks
        self.boxes = boxes

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ArrayDataset:
        """A new dataset holding the rows ``indices`` (copied, in that order)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ArrayDataset(
            self.images[idx],
            self.labels[idx],
            masks=None if self.masks is None else self.masks[idx],
            boxes=None if self.boxes is None else self.boxes[idx],
        )

    @staticmethod
    def concatenate(parts: Sequence[ArrayDataset]) -> ArrayDataset:
        """Stack several array datasets (masks/boxes kept only if every part has them)."""
        if not parts:
            raise ValueError("ArrayDataset.concatenate: 'parts' must not be empty.")
        masks = [p.masks for p in parts]
        boxes = [p.boxes for p in parts]
        return ArrayDataset(
            torch.cat([p.images for p in parts]),
            torch.cat([p.labels for p in parts]),
            masks=torch.cat(masks) if all(m is not None for m in masks) else None,
            boxes=torch.cat(boxes) if all(b is not None for b in boxes) else None,
        )


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """The labels of a dataset as an ``int64`` numpy array.

    Uses ``dataset.labels`` when present (every fedlib dataset has it); otherwise reads the
    second element of each item, which decodes every image.
    """
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(torch.as_tensor(labels).cpu().numpy(), dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


@dataclass
class FederatedDataset:
    """Client id -> train/test datasets, with the metadata every chapter needs.

    Parameters
    ----------
    name : str
    train, test : mapping of client id (0..K-1) to Dataset
        Each dataset yields ``(image, label)`` and exposes ``labels``.
    class_names : sequence of str
        Class ``c`` is ``class_names[c]``.
    client_names : sequence of str, optional
        Site names; defaults to ``"client 0"``, ``"client 1"``, ...
    """

    name: str
    train: Mapping[int, Dataset]
    test: Mapping[int, Dataset]
    class_names: Sequence[str]
    client_names: Sequence[str] = field(default_factory=tuple)
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = sorted(self.train)
        if ids != list(range(len(ids))):
            raise ValueError(
                f"FederatedDataset: client ids must be 0..K-1, got {ids[:10]}"
                + ("..." if len(ids) > 10 else "")
            )
        if sorted(self.test) != ids:
            raise ValueError(
                "FederatedDataset: 'train' and 'test' must have the same client ids, "
                f"got {ids} and {sorted(self.test)}."
            )
        if not self.client_names:
            self.client_names = tuple(f"client {k}" for k in ids)
        if len(self.client_names) != len(ids):
            raise ValueError(
                f"FederatedDataset: 'client_names' has {len(self.client_names)} names for "
                f"{len(ids)} clients."
            )
        self.class_names = tuple(self.class_names)
        self.client_names = tuple(self.client_names)

    @property
    def num_clients(self) -> int:
        return len(self.train)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def client_ids(self) -> list[int]:
        return list(range(self.num_clients))

    def labels(self, client_id: int, split: str = "train") -> np.ndarray:
        return dataset_labels(self._split(split)[client_id])

    def class_counts(self, split: str = "train") -> np.ndarray:
        """Counts per client and class, shape (K, C)."""
        counts = np.zeros((self.num_clients, self.num_classes), dtype=np.int64)
        for k in self.client_ids():
            counts[k] = np.bincount(self.labels(k, split), minlength=self.num_classes)
        return counts

    def pooled(self, split: str = "test") -> Dataset:
        """All clients' data of one split as one dataset (client order)."""
        parts = [self._split(split)[k] for k in self.client_ids()]
        if all(isinstance(p, ArrayDataset) for p in parts):
            return ArrayDataset.concatenate(parts)  # type: ignore[arg-type]
        return _LabeledConcat(parts)

    def centralized(self) -> FederatedDataset:
        """One client holding the pooled train and test sets (the centralized reference)."""
        return FederatedDataset(
            name=f"{self.name} (pooled)",
            train={0: self.pooled("train")},
            test={0: self.pooled("test")},
            class_names=self.class_names,
            client_names=("pooled",),
            info=dict(self.info),
        )

    def _split(self, split: str) -> Mapping[int, Dataset]:
        if split == "train":
            return self.train
        if split == "test":
            return self.test
        raise ValueError(f"FederatedDataset: 'split' must be 'train' or 'test', got {split!r}.")


class _LabeledConcat(torch.utils.data.ConcatDataset):
    """ConcatDataset that keeps the ``labels`` attribute of its parts."""

    def __init__(self, parts: Sequence[Dataset]):
        super().__init__(parts)
        self.labels = torch.as_tensor(np.concatenate([dataset_labels(p) for p in parts]))
