"""Client split files: a plain JSON/CSV format, and a safe converter for pickled ones.

fedlib reads split files only in plain formats (JSON or CSV); nothing is ever unpickled on load.
The FedNPR/FCA authors ship their RSNA-ICH splits (``ich_datasplit_10cl.npy``,
``ich_datasplit_5cl.npy``) as NumPy ``.npy`` files holding a pickled dict
``{"train": {client: {"image": [...], "label": [...]}}, "test": {...}}``.
:func:`convert_pickled_split` reads such a file **once** with a restricted unpickler that can only
build dicts, lists, tuples, strings, numbers and NumPy arrays (anything else, e.g. a pickle whose
reduce step calls ``os.system``, is refused before it runs) and writes the plain JSON format.

JSON format::

    {"train": {"<client>": {"image": ["ID_...", ...], "label": [3, ...]}, ...},
     "test":  {"<client>": {...}, ...}}

(``label`` optional). CSV format: columns ``image, client, split`` (split in {train, test}) and an
optional ``label`` column.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedlib.data.real._io import DataFormatError, atomic_write_bytes, read_csv_columns, require_file

__all__ = [
    "ClientSplit",
    "UnsafePickleError",
    "convert_pickled_split",
    "load_pickled_split",
    "read_client_split",
]

SPLITS = ("train", "test")


class UnsafePickleError(DataFormatError):
    """A pickle asked for a global outside the allow-list; nothing was executed."""


def _numpy_global(name: str, modules: tuple[str, ...]):
    import importlib

    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(name)  # pragma: no cover - every numpy has one of the two


# (module, name) pairs a split pickle may reference, and what they resolve to. Arrays pickle as
# _reconstruct(ndarray, shape, dtype) + __setstate__; `scalar` builds a numpy scalar from bytes;
# `_codecs.encode` is how protocol-2 pickles spell bytes; `_frombuffer` rebuilds a protocol-5
# array from its raw buffer. None of these runs code of the file's choosing.
_ALLOWED_GLOBALS = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "str"): str,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "bool"): bool,
    ("builtins", "bytes"): bytes,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_NUMPY_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMPY_ALLOWED = ("_reconstruct", "scalar")
_NUMPY_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")  # protocol-5 array buffers


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` resolves only the allow-listed globals."""

    def __init__(self, stream, source: str):
        super().__init__(stream)
        self.source = source

    def find_class(self, module: str, name: str):
        if module == "__builtin__":  # protocol 0-2 pickles use the Python 2 module name
            module = "builtins"
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module in _NUMPY_MULTIARRAY and name in _NUMPY_ALLOWED:
            return _numpy_global(name, _NUMPY_MULTIARRAY)
        if module in _NUMPY_NUMERIC and name == "_frombuffer":
            return _numpy_global(name, _NUMPY_NUMERIC)
        if (module, name) == ("_codecs", "encode"):
            import codecs

            return codecs.encode
        raise UnsafePickleError(
            f"{self.source}: refused to unpickle global {module}.{name}; split files may only "
            "hold dicts, lists, tuples, strings, numbers and NumPy arrays. Nothing was run. If "
            "you trust the file, convert it yourself in an isolated environment to the plain "
            "JSON format described in fedlib.data.real.splits."
        )


def _unpickle(data: bytes, source: str):
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as error:
        raise DataFormatError(f"{source}: not a readable pickle ({error}).") from error


def load_pickled_split(path: str | os.PathLike[str]):
    """Read a pickled split file (``.npy`` with an object array, or a plain pickle) safely.

    Returns the Python object it holds (for the authors' files, a dict). The restricted unpickler
    refuses every global outside dict/list/tuple/set/str/int/float/bool and NumPy array
    reconstruction, raising :class:`UnsafePickleError` before anything is called.
    """
    path = require_file(Path(path), "pickled split file")
    data = path.read_bytes()
    if data.startswith(b"\x93NUMPY"):
        stream = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        except ValueError as error:
            raise DataFormatError(f"{path}: broken .npy header ({error}).") from error
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False)
        array = _unpickle(data[stream.tell():], str(path))
        if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
            raise DataFormatError(f"{path}: .npy payload does not match its header.")
        return array.item() if array.shape == () else array
    return _unpickle(data, str(path))


def _to_plain(value, source: str):
    """Convert nested containers, NumPy arrays and scalars to JSON-able Python values."""
    if isinstance(value, Mapping):
        return {str(_to_plain(k, source)): _to_plain(v, source) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_to_plain(v, source) for v in value.tolist()]
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [_to_plain(v, source) for v in items]
    if isinstance(value, np.generic):
        return _to_plain(value.item(), source)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    raise DataFormatError(
        f"{source}: cannot convert a value of type {type(value).__name__} to JSON."
    )


def convert_pickled_split(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Convert a pickled split file (e.g. the authors' ``ich_datasplit_10cl.npy``) to JSON.

    The source is read with the restricted unpickler of :func:`load_pickled_split`; the JSON
    (dict keys as strings, arrays as lists) is written atomically to ``dst`` and checked to be
    a valid split by :func:`read_client_split`. Returns ``dst``.
    """
    src, dst = Path(src), Path(dst)
    plain = _to_plain(load_pickled_split(src), str(src))
    _parse_split_mapping(plain, str(src))
    atomic_write_bytes(dst, json.dumps(plain, indent=1).encode("utf-8"))
    return dst


@dataclass(frozen=True)
class ClientSplit:
    """A split read from a file: per split, per client, the image ids (and labels, if given).

    ``clients`` holds the client keys in file order (numeric keys sorted numerically).
    """

    clients: tuple[str, ...]
    images: dict[str, dict[str, list[str]]]
    labels: dict[str, dict[str, list[int]]] | None


def _client_order(keys) -> tuple[str, ...]:
    keys = list(keys)
    if all(k.lstrip("-").isdigit() for k in keys):
        return tuple(sorted(keys, key=int))
    return tuple(keys)


def _parse_split_mapping(plain, source: str) -> ClientSplit:
    if not isinstance(plain, dict) or set(plain) != set(SPLITS):
        found = sorted(plain) if isinstance(plain, dict) else type(plain).__name__
        raise DataFormatError(f"{source}: a split must have exactly the keys 'train' and 'test', "
                              f"found {found}.")
    clients = _client_order(plain["train"])
    if set(plain["test"]) != set(clients):
        raise DataFormatError(f"{source}: 'train' and 'test' list different clients "
                              f"({sorted(plain['train'])} vs {sorted(plain['test'])}).")
    images: dict[str, dict[str, list[str]]] = {}
    labels: dict[str, dict[str, list[int]]] = {}
    has_labels = True
    for split in SPLITS:
        images[split], labels[split] = {}, {}
        for client in clients:
            entry = plain[split][client]
            if not isinstance(entry, dict) or "image" not in entry:
                raise DataFormatError(f"{source}: {split}/{client} must be an object with an "
                                      "'image' list.")
            ids = entry["image"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise DataFormatError(f"{source}: {split}/{client}/image must be a list of "
                                      "strings.")
            images[split][client] = ids
            if "label" in entry:
                lab = entry["label"]
                if not isinstance(lab, list) or len(lab) != len(ids) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in lab
                ):
                    raise DataFormatError(f"{source}: {split}/{client}/label must be a list of "
                                          f"{len(ids)} integers.")
                labels[split][client] = lab
            else:
                has_labels = False
    return ClientSplit(clients, images, labels if has_labels else None)


def read_client_split(path: str | os.PathLike[str]) -> ClientSplit:
    """Read a split file in the plain JSON or CSV format (by suffix: ``.json`` or ``.csv``).

    Pickled files are refused with a pointer to :func:`convert_pickled_split`.
    """
    path = require_file(Path(path), "split file")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".pkl", ".pickle", ".npz"):
        raise DataFormatError(
            f"{path}: pickled split files are not read directly; convert it once with "
            "fedlib.data.real.convert_pickled_split(src, dst) into JSON."
        )
    if suffix == ".json":
        try:
            plain = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataFormatError(f"{path}: not valid JSON ({error}).") from error
        return _parse_split_mapping(plain, str(path))
    if suffix == ".csv":
        frame = read_csv_columns(path, ("image", "client", "split"), what="split CSV",
                                 dtype={"image": str, "client": str, "split": str})
        bad = sorted(set(frame["split"]) - set(SPLITS))
        if bad:
            raise DataFormatError(f"{path}: column 'split' must hold 'train' or 'test', "
                                  f"found {bad[:5]}.")
        has_labels = "label" in frame.columns
        if has_labels and not np.issubdtype(frame["label"].dtype, np.integer):
            raise DataFormatError(f"{path}: column 'label' must hold integers.")
        clients = _client_order(dict.fromkeys(frame["client"]))
        plain: dict = {split: {c: {"image": []} for c in clients} for split in SPLITS}
        for split in SPLITS:
            for client in clients:
                rows = frame[(frame["split"] == split) & (frame["client"] == client)]
                plain[split][client]["image"] = rows["image"].tolist()
                if has_labels:
                    plain[split][client]["label"] = [int(v) for v in rows["label"]]
        return _parse_split_mapping(plain, str(path))
    raise DataFormatError(f"{path}: split files must end in .json or .csv, got {suffix!r}.")
