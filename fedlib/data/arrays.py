"""Your own data: arrays in memory, or a plain ``.npz`` file, as a federated dataset.

:func:`from_arrays` is the one public route from tensors to a
:class:`~fedlib.data.base.FederatedDataset`; :func:`load_npz` reads the same arrays from a
``.npz`` file, which is what ``python -m fedlib run --dataset path/to/data.npz`` does.

File format (``numpy.savez``; read with ``allow_pickle=False``):

=============== ================== ==============================================
key             shape, dtype       meaning
=============== ================== ==============================================
``x_train``     (N, C, H, W) float training images (e.g. values in [0, 1])
``y_train``     (N,) integer       class of each training image, 0..num_classes-1
``client``      (N,) integer       client (site) id of each training image
``x_test``      (M, C, H, W) float test images
``y_test``      (M,) integer       class of each test image
``client_test`` (M,) integer       optional: client of each test image
``class_names`` (num_classes,) str optional: class names (a unicode array)
=============== ================== ==============================================

Without ``client_test`` every client is evaluated on the one shared test set: generalization
scores it once, and specialization then measures each client's own model on that shared set
(``info["test_protocol"] == "shared"``), not on data of its own site.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fedlib._validation import Options, check_param
from fedlib.data.base import ArrayDataset, FederatedDataset
from fedlib.data.partitions import proportional_test_indices

__all__ = ["NPZ_KEYS", "from_arrays", "load_npz"]

NPZ_KEYS = ("x_train", "y_train", "client", "x_test", "y_test")
"""The keys every ``.npz`` file needs; ``client_test`` and ``class_names`` are optional."""

_OPTIONAL_KEYS = ("client_test", "class_names")


def _array(owner: str, key: str, value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"{owner}: {key!r} must be a numeric array, got dtype object.")
    return array


def _images(owner: str, key: str, value) -> torch.Tensor:
    array = _array(owner, key, value)
    if array.ndim != 4:
        raise ValueError(
            f"{owner}: {key!r} must have shape (N, C, H, W), got {array.shape}"
            + (" (add a channel axis: x[:, None])" if array.ndim == 3 else "") + "."
        )
    if not np.issubdtype(array.dtype, np.floating):
        hint = " (divide uint8 images by 255)" if array.dtype == np.uint8 else ""
        raise TypeError(f"{owner}: {key!r} must be a float array, got dtype {array.dtype}{hint}.")
    if array.size and not np.isfinite(array).all():
        raise ValueError(f"{owner}: {key!r} holds NaN or infinite values.")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _ints(owner: str, key: str, value, count: int, count_of: str) -> np.ndarray:
    array = _array(owner, key, value)
    if array.ndim != 1 or array.shape[0] != count:
        raise ValueError(
            f"{owner}: {key!r} must have shape ({count},) to match {count_of!r}, "
            f"got {array.shape}."
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.array_equal(array, np.round(array)):
            array = array.astype(np.int64)
        else:
            raise TypeError(f"{owner}: {key!r} must hold integers, got dtype {array.dtype}.")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{owner}: {key!r} must be >= 0, got a minimum of {array.min()}.")
    return array


def from_arrays(
    x_train,
    y_train,
    client,
    x_test,
    y_test,
    client_test=None,
    *,
    class_names: Sequence[str] | None = None,
    client_names: Sequence[str] | None = None,
    local_test: str = "split",
    seed: int = 0,
    name: str = "arrays",
) -> FederatedDataset:
    """A federated dataset from your own arrays (numpy or torch).

    Parameters
    ----------
    x_train : array (N, C, H, W), float (e.g. in [0, 1])
    y_train : array (N,), int
        Class ids ``0..num_classes-1``.
    client : array (N,), int
        Client (site) id of each training image; the distinct ids, sorted, become clients
        ``0..K-1`` (client names ``"client <id>"`` unless ``client_names`` are given).
    x_test : array (M, C, H, W), float
    y_test : array (M,), int
    client_test : array (M,), int, optional
        Client of each test image (ids as in ``client``; a client may have no test image).
        Without it every client shares the one test set (the same object, scored once for
        generalization by :meth:`FederatedDataset.pooled_test`).
    class_names : sequence of str, optional
        Default ``"class 0"``, ...; their number is the number of classes.
    client_names : sequence of str, optional
        One per distinct client id, in sorted id order.
    local_test : {"split", "proportional"}, default "split"
        "proportional" (only without ``client_test``): each client's test split is sampled from
        the shared test set in proportion to its training labels
        (:func:`~fedlib.data.partitions.proportional_test_indices`, seed ``seed + k``).
    seed : int, default 0
    name : str, default "arrays"

    Returns
    -------
    FederatedDataset

    Examples
    --------
    >>> x = np.random.default_rng(0).random((6, 1, 4, 4))
    >>> data = from_arrays(x, [0, 1, 0, 1, 0, 1], [7, 7, 7, 9, 9, 9], x[:2], [0, 1])
    >>> data.num_clients, data.client_names, len(data.pooled_test())
    (2, ('client 7', 'client 9'), 2)
    """
    owner = "from_arrays"
    check_param(owner, "local_test", local_test, Options(("split", "proportional")))
    images = _images(owner, "x_train", x_train)
    labels = _ints(owner, "y_train", y_train, images.shape[0], "x_train")
    sites = _ints(owner, "client", client, images.shape[0], "x_train")
    test_images = _images(owner, "x_test", x_test)
    test_labels = _ints(owner, "y_test", y_test, test_images.shape[0], "x_test")
    if images.shape[0] == 0:
        raise ValueError(f"{owner}: 'x_train' holds no image.")
    if test_images.shape[0] == 0:
        raise ValueError(f"{owner}: 'x_test' holds no image.")
    if test_images.shape[1:] != images.shape[1:]:
        raise ValueError(
            f"{owner}: 'x_test' images are {tuple(test_images.shape[1:])}, 'x_train' images "
            f"{tuple(images.shape[1:])}; they must match (C, H, W)."
        )
    needed = int(max(labels.max(), test_labels.max())) + 1
    if class_names is None:
        class_names = tuple(f"class {c}" for c in range(needed))
    class_names = tuple(str(c) for c in class_names)
    if len(class_names) < needed:
        key = "y_train" if labels.max() + 1 == needed else "y_test"
        raise ValueError(
            f"{owner}: {key!r} holds class {needed - 1}, but 'class_names' names only "
            f"{len(class_names)} classes."
        )
    ids = np.unique(sites)
    if client_names is not None and len(client_names) != len(ids):
        raise ValueError(
            f"{owner}: 'client_names' has {len(client_names)} names for {len(ids)} clients "
            f"(the distinct values of 'client': {ids.tolist()[:10]})."
        )
    names = tuple(client_names) if client_names is not None else tuple(f"client {i}" for i in ids)
    pool = ArrayDataset(images, torch.from_numpy(labels))
    test_pool = ArrayDataset(test_images, torch.from_numpy(test_labels))
    train = {k: pool.subset(np.flatnonzero(sites == site)) for k, site in enumerate(ids)}
    info: dict = {"source": "arrays"}
    if client_test is not None:
        if local_test == "proportional":
            raise ValueError(
                f"{owner}: 'local_test'='proportional' samples client test sets from one shared "
                "test set; it cannot be combined with 'client_test'."
            )
        test_sites = _ints(owner, "client_test", client_test, test_images.shape[0], "x_test")
        unknown = sorted(set(np.unique(test_sites).tolist()) - set(ids.tolist()))
        if unknown:
            raise ValueError(
                f"{owner}: 'client_test' holds client id(s) {unknown[:5]} that have no training "
                f"image in 'client' (ids {ids.tolist()[:10]})."
            )
        test = {k: test_pool.subset(np.flatnonzero(test_sites == site))
                for k, site in enumerate(ids)}
        info["test_protocol"] = "per_client_split"
    elif local_test == "proportional":
        test = {
            k: test_pool.subset(proportional_test_indices(
                train[k].labels.numpy(), test_labels, len(class_names), seed + k))
            for k in train
        }
        info.update(test_protocol="proportional", global_test=test_pool)
    else:
        test = dict.fromkeys(train, test_pool)
        info.update(test_protocol="shared", global_test=test_pool)
    return FederatedDataset(name=name, train=train, test=test, class_names=class_names,
                            client_names=names, info=info)


def load_npz(path: str | os.PathLike[str], **options) -> FederatedDataset:
    """Read a ``.npz`` file in the format of this module into a federated dataset.

    ``options`` go to :func:`from_arrays` (``local_test``, ``client_names``, ``seed``).
    Errors name the file and the key, shape or dtype that is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_npz: no such file: {path}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"load_npz: {path} is not a readable .npz file ({error}).") from error
    except ValueError as error:  # object arrays need pickle, which is refused
        raise ValueError(
            f"load_npz: {path} holds an object array, which would need unpickling; save plain "
            f"numeric arrays ({error})."
        ) from error
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise ValueError(
            f"load_npz: {path} lacks the key(s) {', '.join(map(repr, missing))}; found "
            f"{', '.join(map(repr, sorted(arrays))) or 'no arrays'}. Needed: "
            f"{', '.join(NPZ_KEYS)} (optional: {', '.join(_OPTIONAL_KEYS)})."
        )
    unknown = sorted(set(arrays) - set(NPZ_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise ValueError(
            f"load_npz: {path} holds unknown key(s) {', '.join(map(repr, unknown))}; the keys "
            f"are {', '.join(NPZ_KEYS + _OPTIONAL_KEYS)}."
        )
    class_names = None
    if "class_names" in arrays:
        if arrays["class_names"].dtype.kind not in "US" or arrays["class_names"].ndim != 1:
            raise TypeError(
                f"load_npz: {path}: 'class_names' must be a 1-D array of strings, got dtype "
                f"{arrays['class_names'].dtype} and shape {arrays['class_names'].shape}."
            )
        class_names = [str(c) for c in arrays["class_names"]]
    try:
        return from_arrays(
            arrays["x_train"], arrays["y_train"], arrays["client"], arrays["x_test"],
            arrays["y_test"], arrays.get("client_test"), class_names=class_names,
            name=path.stem, **options,
        )
    except (TypeError, ValueError) as error:
        message = str(error).replace("from_arrays: ", "", 1)
        raise type(error)(f"load_npz: {path}: {message}") from error
