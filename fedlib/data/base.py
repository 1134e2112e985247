"""The one dataset interface every source (synthetic or real) yields.

A :class:`FederatedDataset` maps client ids ``0..K-1`` to a train and a test
:class:`torch.utils.data.Dataset`. Every such dataset exposes ``labels`` (a 1-D ``int64`` tensor),
so class counts and partitions never need to decode an image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "ArrayDataset",
    "FederatedDataset",
    "concat_datasets",
    "content_digest",
    "dataset_labels",
    "take_rows",
]


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
        if not ids:
            raise ValueError(
                f"FederatedDataset: {self.name!r} has no clients (its split lists none)."
            )
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
        return concat_datasets([self._split(split)[k] for k in self.client_ids()])

    def empty_clients(self, split: str = "train") -> list[int]:
        """The ids of the clients whose ``split`` holds no example."""
        return [k for k in self.client_ids() if len(self._split(split)[k]) == 0]

    def pooled_test(self) -> Dataset:
        """The test set of generalization: the union of the clients' distinct test splits.

        When ``info["global_test"]`` is set (a shared balanced test set, or the global set a
        ``local_test="proportional"`` split samples from) it is that set. Otherwise each
        distinct test split counts once: when every client shares one test set (the same
        object, as for a user's ``.npz`` without ``client_test``), the result is that one set,
        not K copies of it. Empty splits are left out.
        """
        shared = self.info.get("global_test")
        if shared is not None:
            return shared
        parts: list[Dataset] = []
        seen: set[int] = set()
        for k in self.client_ids():
            part = self.test[k]
            if id(part) in seen or len(part) == 0:
                continue
            seen.add(id(part))
            parts.append(part)
        if not parts:
            raise ValueError(
                f"FederatedDataset.pooled_test: every client's test split of {self.name!r} is "
                "empty."
            )
        if len(parts) == 1:
            return parts[0]
        return concat_datasets(parts)

    def fingerprint(self) -> str:
        """A sha256 hex digest of what defines the data, stable across processes.

        Hashed: the name, the class names, the client names, and per client and split the
        labels and a content digest of the images (:func:`content_digest`: the bytes of
        in-memory tensors; file names and sizes for lazily decoded files). Any change of the
        data (scale, partition, ``alpha``, split, seed) changes the string; the same data gives
        the same string in every process. ``info`` is not hashed, only the data it produced.
        """
        digest = hashlib.sha256()
        cache: dict[int, str] = {}

        def feed(*parts: object) -> None:
            for part in parts:
                digest.update(repr(part).encode("utf-8"))
                digest.update(b"\x00")

        feed("fedlib.FederatedDataset/1", self.name, self.class_names, self.client_names)
        for k in self.client_ids():
            for split in ("train", "test"):
                part = self._split(split)[k]
                labels = dataset_labels(part)
                feed(k, split, len(part), hashlib.sha256(labels.tobytes()).hexdigest())
                if id(part) not in cache:
                    cache[id(part)] = content_digest(part)
                feed(cache[id(part)])
        return digest.hexdigest()

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


def concat_datasets(parts: Sequence[Dataset]) -> Dataset:
    """One dataset holding ``parts`` in order, of the parts' own kind when they share one.

    Parts of one class with a ``concatenate`` static method (:class:`ArrayDataset`, the lazy
    ``ImageFileDataset``) are joined by it; anything else becomes a ``ConcatDataset`` that keeps
    ``labels``.
    """
    if not parts:
        raise ValueError("concat_datasets: 'parts' must not be empty.")
    kind = type(parts[0])
    joiner = getattr(kind, "concatenate", None)
    if callable(joiner) and all(type(p) is kind for p in parts):
        try:
            return joiner(parts)
        except ValueError:  # e.g. lazy files decoded with different options
            pass
    return _LabeledConcat(parts)


def take_rows(dataset: Dataset, indices: Sequence[int] | np.ndarray) -> Dataset:
    """The rows ``indices`` of ``dataset``: its own ``subset`` when it has one (in-memory copy
    or lazy file list), else a ``Subset`` that keeps ``labels``."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    subset = getattr(dataset, "subset", None)
    if callable(subset):
        return subset(idx)
    return _LabeledSubset(dataset, idx)


class _LabeledSubset(torch.utils.data.Subset):
    """A torch Subset that keeps a ``labels`` attribute."""

    def __init__(self, dataset: Dataset, indices: np.ndarray):
        super().__init__(dataset, indices.tolist())
        self.labels = torch.as_tensor(dataset_labels(dataset)[indices])


class _LabeledConcat(torch.utils.data.ConcatDataset):
    """ConcatDataset that keeps the ``labels`` attribute of its parts."""

    def __init__(self, parts: Sequence[Dataset]):
        super().__init__(parts)
        self.labels = torch.as_tensor(np.concatenate([dataset_labels(p) for p in parts]))


def content_digest(dataset: Dataset) -> str:
    """A cheap sha256 digest of a dataset's content, without decoding any image file.

    * :class:`ArrayDataset`: the bytes, shapes and dtypes of its tensors (images, labels,
      masks, boxes);
    * lazily decoded files (a ``paths`` attribute, e.g. ``ImageFileDataset``): each file's name
      and size, plus the decoding options (``image_size``, ``channels``);
    * concatenations and subsets: the digests of their parts and the indices taken;
    * anything else: its type, length and labels.
    """
    digest = hashlib.sha256()

    def feed(*parts: object) -> None:
        for part in parts:
            digest.update(part if isinstance(part, bytes) else repr(part).encode("utf-8"))
            digest.update(b"\x00")

    if isinstance(dataset, ArrayDataset):
        for name in ("images", "labels", "masks", "boxes"):
            tensor = getattr(dataset, name)
            if tensor is None:
                feed(name, None)
                continue
            array = np.ascontiguousarray(tensor.detach().cpu().numpy())
            feed(name, array.shape, str(array.dtype))
            digest.update(memoryview(array.reshape(-1)).cast("B"))  # no copy of the pixels
    elif isinstance(getattr(dataset, "paths", None), list):
        feed(type(dataset).__name__, getattr(dataset, "image_size", None),
             getattr(dataset, "channels", None))
        for path in dataset.paths:  # type: ignore[attr-defined]
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1
            feed(os.path.basename(os.fspath(path)), size)
        for group in getattr(dataset, "mask_paths", None) or []:
            feed([os.path.basename(os.fspath(m)) for m in group])
        feed(dataset_labels(dataset).tobytes())
    elif isinstance(dataset, torch.utils.data.ConcatDataset):
        feed("concat", *[content_digest(part) for part in dataset.datasets])
    elif isinstance(dataset, torch.utils.data.Subset):
        feed("subset", content_digest(dataset.dataset),
             np.asarray(dataset.indices, dtype=np.int64).tobytes())
    else:
        feed(type(dataset).__qualname__, len(dataset), dataset_labels(dataset).tobytes())  # type: ignore[arg-type]
    return digest.hexdigest()
