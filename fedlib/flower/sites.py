"""One folder of data per site: what a SuperNode reads, never sends.

A site folder holds ``site.npz`` in the format of :mod:`fedlib.data.arrays` with one client
(``x_train``, ``y_train``, ``client``, ``x_test``, ``y_test``, ``client_test``,
``class_names``); the class names fix the federation's number of classes, so every site
declares all of them even when it lacks some. A node finds its folder in its node config
(``data-dir``). :func:`write_site` cuts a :class:`~fedlib.data.FederatedDataset` into such
folders (for rehearsals on one machine); a hospital writes its own with
:func:`fedlib.data.from_arrays`-style arrays and ``numpy.savez``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fedlib._atomic import atomic_write_bytes
from fedlib.data.arrays import load_npz
from fedlib.data.base import FederatedDataset
from fedlib.flower.client import Site

__all__ = ["SITE_FILE", "read_site", "write_site"]

SITE_FILE = "site.npz"


def _arrays(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    images = getattr(data, "images", None)
    labels = getattr(data, "labels", None)
    if images is None or labels is None:
        items = [data[i] for i in range(len(data))]
        images = torch.stack([x for x, _ in items]) if items else torch.zeros(0)
        labels = torch.tensor([int(y) for _, y in items], dtype=torch.int64)
    return images.numpy(), torch.as_tensor(labels).numpy()


def write_site(folder: str | Path, federation: FederatedDataset, client_id: int) -> Path:
    """Write client ``client_id`` of ``federation`` to ``folder/site.npz``; returns the file."""
    x_train, y_train = _arrays(federation.train[client_id])
    x_test, y_test = _arrays(federation.test[client_id])
    if x_test.size == 0:
        x_test = np.zeros((0, *x_train.shape[1:]), dtype=x_train.dtype)
    buffer = io.BytesIO()
    np.savez(
        buffer, x_train=x_train, y_train=y_train,
        client=np.full(len(y_train), client_id, dtype=np.int64),
        x_test=x_test, y_test=y_test,
        client_test=np.full(len(y_test), client_id, dtype=np.int64),
        class_names=np.array(federation.class_names, dtype=str),
    )
    return atomic_write_bytes(Path(folder) / SITE_FILE, buffer.getvalue())


def read_site(folder: str | Path) -> Site:
    """The :class:`~fedlib.flower.client.Site` stored in ``folder/site.npz``."""
    path = Path(folder) / SITE_FILE
    data = load_npz(path)
    if data.num_clients != 1:
        raise ValueError(f"read_site: {path} holds {data.num_clients} clients; a site file "
                         "holds one.")
    return Site(train=data.train[0], test=data.test[0], num_classes=data.num_classes)
