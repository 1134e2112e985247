"""Lazily decoded image datasets and federation by index lists.

An :class:`ImageFileDataset` holds file paths and labels only; ``__getitem__`` decodes one file.
So ``labels`` (and every class count or partition built on it) never touches an image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fedlib.data.base import ArrayDataset, FederatedDataset, take_rows
from fedlib.data.real._io import (
    DEFAULT_MAX_PIXELS,
    DataFormatError,
    image_to_tensor,
    mask_to_tensor,
    read_image,
)

__all__ = ["ImageFileDataset", "federate_by_indices", "image_size_pair"]

ImageReader = Callable[..., Image.Image]


def image_size_pair(owner: str, image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """Validate ``image_size`` (an int side, an (H, W) pair or None) and return (H, W) or None."""
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool) and image_size >= 1:
        return (image_size, image_size)
    if (
        isinstance(image_size, tuple | list)
        and len(image_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in image_size)
    ):
        return (int(image_size[0]), int(image_size[1]))
    raise ValueError(
        f"{owner}: 'image_size' must be an int >= 1, an (H, W) pair of such ints or None, "
        f"got {image_size!r}."
    )


class ImageFileDataset(Dataset):
    """Images read from files on demand, with labels known up front.

    Parameters
    ----------
    paths : sequence of paths
        One image file per item.
    labels : sequence of int
        Class index per item (``labels`` attribute: int64 tensor of shape (N,)).
    image_size : int or (H, W), optional
        Every image is resized to this size (bilinear); ``None`` keeps the file's size.
    channels : {1, 3}
        Grey (``"L"``) or RGB output; the tensor has shape (channels, H, W), float32 in [0, 1].
    reader : callable, optional
        ``reader(path, max_pixels=...) -> PIL.Image``; defaults to the size-limited
        :func:`~fedlib.data.real._io.read_image`. CT slices use a windowing DICOM reader.
    mask_paths : sequence of sequences of paths, optional
        For segmentation data: the mask files of each item, merged by logical OR (BUSI ships
        some lesions as ``_mask.png`` plus ``_mask_1.png``). An empty list means an empty mask.
    transform : callable, optional
        Applied to the image tensor after resizing (e.g. normalisation or augmentation).
    max_pixels : int
        Files larger than this are refused before decoding.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        *,
        image_size: int | tuple[int, int] | None = None,
        channels: int = 3,
        reader: ImageReader | None = None,
        mask_paths: Sequence[Sequence[str | Path]] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        owner = type(self).__name__
        self.paths = [Path(p) for p in paths]
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))  # a private copy
        if self.labels.shape != (len(self.paths),):
            raise ValueError(
                f"{owner}: 'labels' must have one entry per path ({len(self.paths)}), "
                f"got shape {tuple(self.labels.shape)}."
            )
        if len(self.labels) and int(self.labels.min()) < 0:
            raise ValueError(f"{owner}: 'labels' must be class indices >= 0, "
                             f"got {int(self.labels.min())}.")
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ValueError(f"{owner}: 'max_pixels' must be an int >= 1, got {max_pixels!r}.")
        if channels not in (1, 3):
            raise ValueError(f"{owner}: 'channels' must be one of 1, 3, got {channels!r}.")
        if mask_paths is not None and len(mask_paths) != len(self.paths):
            raise ValueError(
                f"{owner}: 'mask_paths' must have one entry per path ({len(self.paths)}), "
                f"got {len(mask_paths)}."
            )
        self.image_size = image_size_pair(owner, image_size)
        self.channels = channels
        self.reader = reader if reader is not None else read_image
        self.mask_paths = (
            None if mask_paths is None else [[Path(m) for m in group] for group in mask_paths]
        )
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_masks(self) -> bool:
        return self.mask_paths is not None

    def load_image(self, index: int) -> torch.Tensor:
        """Decode item ``index``: float32 tensor (channels, H, W) in [0, 1], before transform."""
        image = self.reader(self.paths[index], max_pixels=self.max_pixels)
        if image.mode == "F" and self.channels != 1:
            raise DataFormatError(f"{self.paths[index]}: a single-channel image, asked for "
                                  f"{self.channels} channels.")
        return image_to_tensor(image, channels=self.channels, size=self.image_size)

    def load_mask(self, index: int) -> torch.Tensor:
        """The merged binary mask of item ``index``: float32 tensor (1, H, W).

        With ``image_size=None`` the mask keeps the size of its files (all must agree); an item
        without mask files gets an empty mask of ``image_size``.
        """
        if self.mask_paths is None:
            raise ValueError(f"{type(self).__name__}: this dataset has no masks.")
        group = self.mask_paths[index]
        if not group:
            if self.image_size is None:
                height, width = self.load_image(index).shape[-2:]
                return torch.zeros(1, height, width)
            return torch.zeros(1, *self.image_size)
        masks = []
        first_size: tuple[int, int] | None = None
        for path in group:
            image = read_image(path, max_pixels=self.max_pixels)
            if first_size is None:
                first_size = image.size
            elif image.size != first_size:
                raise DataFormatError(
                    f"{path}: mask is {image.size[0]} x {image.size[1]} pixels but "
                    f"{group[0]} is {first_size[0]} x {first_size[1]}."
                )
            masks.append(mask_to_tensor(image, size=self.image_size))
        return torch.stack(masks).amax(dim=0)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageFileDataset:
        """A new lazy dataset holding the items ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.paths = [self.paths[i] for i in idx]
        new.labels = self.labels[torch.as_tensor(idx)]
        new.mask_paths = None if self.mask_paths is None else [self.mask_paths[i] for i in idx]
        return new

    @staticmethod
    def concatenate(parts: Sequence[ImageFileDataset]) -> ImageFileDataset:
        """Join lazy datasets read with the same options (size, channels, reader, transform).

        Masks are kept only when every part has them. Raises ``ValueError`` when the parts
        decode differently (then :func:`fedlib.data.base.concat_datasets` falls back to a
        ``ConcatDataset``).
        """
        if not parts:
            raise ValueError("ImageFileDataset.concatenate: 'parts' must not be empty.")
        first = parts[0]
        options = ("image_size", "channels", "reader", "transform", "max_pixels")
        for part in parts[1:]:
            differ = [o for o in options if getattr(part, o) != getattr(first, o)]
            if differ:
                raise ValueError(
                    f"ImageFileDataset.concatenate: the parts differ in {', '.join(differ)}."
                )
        new = object.__new__(type(first))
        new.__dict__.update(first.__dict__)
        new.paths = [path for part in parts for path in part.paths]
        new.labels = torch.cat([part.labels for part in parts])
        masks = [part.mask_paths for part in parts]
        new.mask_paths = (
            [group for m in masks for group in m] if all(m is not None for m in masks) else None
        )
        return new

    def materialize(self) -> ArrayDataset:
        """Decode every item into an in-memory :class:`ArrayDataset` (with masks if present).

        Needs a fixed ``image_size``; the transform is not applied (it may be random).
        Memory: N x channels x H x W x 4 bytes.
        """
        if self.image_size is None:
            raise ValueError(
                f"{type(self).__name__}.materialize: set 'image_size' so that images stack."
            )
        count = len(self)
        images = torch.empty(count, self.channels, *self.image_size)
        for i in range(count):
            images[i] = self.load_image(i)
        masks = None
        if self.mask_paths is not None:
            masks = torch.empty(count, 1, *self.image_size)
            for i in range(count):
                masks[i] = self.load_mask(i)
        return ArrayDataset(images, self.labels.clone(), masks=masks)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, image_size={self.image_size}, "
            f"channels={self.channels}, masks={self.has_masks})"
        )


def _check_index_lists(
    owner: str, name: str, index_lists: Sequence, size: int
) -> list[np.ndarray]:
    arrays = []
    seen = np.zeros(size, dtype=bool)
    for k, indices in enumerate(index_lists):
        array = np.asarray(indices)
        if array.size == 0:
            array = array.astype(np.int64)
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"{owner}: {name}[{k}] must be a 1-D array of integer indices, "
                f"got dtype {array.dtype} and shape {array.shape}."
            )
        if array.size and (array.min() < 0 or array.max() >= size):
            raise ValueError(
                f"{owner}: {name}[{k}] holds indices outside 0..{size - 1} "
                f"(min {array.min()}, max {array.max()})."
            )
        if np.unique(array).size != array.size or seen[array].any():
            raise ValueError(
                f"{owner}: {name} must assign every index at most once; client {k} repeats "
                "an index already used."
            )
        seen[array] = True
        arrays.append(array.astype(np.int64))
    return arrays


def federate_by_indices(
    name: str,
    train: Dataset,
    client_train_indices: Sequence[Sequence[int] | np.ndarray],
    test: Dataset,
    *,
    client_test_indices: Sequence[Sequence[int] | np.ndarray] | None = None,
    class_names: Sequence[str],
    client_names: Sequence[str] | None = None,
    info: Mapping | None = None,
) -> FederatedDataset:
    """Build a :class:`FederatedDataset` from pooled data and one index array per client.

    ``client_train_indices[k]`` are the rows of ``train`` held by client k (e.g. the output of
    ``dirichlet_partition``). For the test side either give ``client_test_indices`` (rows of
    ``test`` per client) or leave it ``None``: then every client is evaluated on the whole
    ``test`` set (the usual protocol for a balanced global test set).
    Every index may be used by at most one client.
    """
    owner = "federate_by_indices"
    if not client_train_indices:
        raise ValueError(f"{owner}: 'client_train_indices' must hold at least one client.")
    train_parts = _check_index_lists(owner, "client_train_indices", client_train_indices,
                                     len(train))
    num_clients = len(train_parts)
    if client_test_indices is None:
        test_sets = dict.fromkeys(range(num_clients), test)
    else:
        if len(client_test_indices) != num_clients:
            raise ValueError(
                f"{owner}: 'client_test_indices' has {len(client_test_indices)} clients, "
                f"'client_train_indices' has {num_clients}."
            )
        test_parts = _check_index_lists(owner, "client_test_indices", client_test_indices,
                                        len(test))
        test_sets = {k: take_rows(test, part) for k, part in enumerate(test_parts)}
    return FederatedDataset(
        name=name,
        train={k: take_rows(train, part) for k, part in enumerate(train_parts)},
        test=test_sets,
        class_names=tuple(class_names),
        client_names=tuple(client_names) if client_names is not None else (),
        info=dict(info or {}),
    )


def read_with(reader: Callable[..., Image.Image], **options) -> ImageReader:
    """A picklable reader with fixed keyword options (DataLoader workers need picklable parts)."""
    return functools.partial(reader, **options)
