"""Compact storage for what a simulation keeps per client: history rows in typed columns, and
client states packed into one buffer each (:class:`PackedClientStates`) or kept on disk between
the rounds in which the client trains (:class:`DiskClientStates`)."""

from __future__ import annotations

import ctypes
import os
import re
import tempfile
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedlib.core.checkpoint import load_weights
from fedlib.core.protocol import ClientState

__all__ = ["DiskClientStates", "PackedClientStates", "PackedState", "RecordTable"]


class _Column:
    """One column: typed values (``array('q')`` for ints, ``array('d')`` for floats, a list
    otherwise) and a presence flag per row."""

    __slots__ = ("kind", "present", "values")

    def __init__(self, rows: int):
        self.kind = "empty"
        self.values: Any = None
        self.present = bytearray(rows)

    def _become(self, kind: str) -> None:
        n = len(self.present)
        if self.kind == "empty" and kind == "int":
            self.values = array("q", bytes(8 * n))
        elif self.kind == "empty" and kind == "float":
            self.values = array("d", bytes(8 * n))
        elif self.kind == "empty":
            self.values = [None] * n
        else:  # mixed kinds: plain objects
            self.values = [v if p else None for v, p in zip(self.values, self.present, strict=True)]
        self.kind = kind

    def append(self, value: Any) -> None:
        kind = _kind(value)
        if self.kind == "empty":
            self._become(kind)
        elif kind != self.kind and self.kind != "object":
            self._become("object")
        if self.kind == "int":
            value = int(value)
        elif self.kind == "float":
            value = float(value)
        self.values.append(value)
        self.present.append(1)

    def pad(self) -> None:
        if self.kind != "empty":
            self.values.append(None if self.kind == "object" else 0)
        self.present.append(0)


def _kind(value: Any) -> str:
    kind = type(value)
    if kind is float:
        return "float"
    if kind is int and -(2**63) <= value < 2**63:
        return "int"
    if isinstance(value, bool | np.bool_):
        return "object"
    if isinstance(value, Integral) and -(2**63) <= int(value) < 2**63:
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    return "object"


class RecordTable:
    """A list of dict rows stored as typed columns (8 bytes per number and 1 per presence flag,
    instead of a Python dict per row): what :class:`~fedlib.core.History` keeps per
    ``(round, client)``.

    Iterating gives the rows back as dicts with the keys each row had (in the order the
    columns first appeared), ints as ``int`` and floats as ``float``; so
    ``pandas.DataFrame(list(table))`` equals the frame of the original dicts.
    """

    def __init__(self, rows: Iterable[Mapping[str, Any]] = ()):
        self._columns: dict[str, _Column] = {}
        self._len = 0
        self.extend(rows)

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row."""
        for key, value in row.items():
            column = self._columns.get(key)
            if column is None:
                column = self._columns[key] = _Column(self._len)
            column.append(value)
        self._len += 1
        for column in self._columns.values():
            if len(column.present) < self._len:
                column.pad()

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add rows in order."""
        for row in rows:
            self.append(row)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("RecordTable index out of range")
        return {
            key: column.values[index]
            for key, column in self._columns.items()
            if column.present[index]
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self._len):
            yield self[i]

    def __repr__(self) -> str:
        return f"RecordTable({self._len} rows, columns {list(self._columns)})"


def _save(path: Path, payload: Any) -> None:
    """``torch.save`` to a fresh temporary file (created exclusively, so a planted link is
    never followed), then renamed to ``path``; not flushed to the disk: these files are this
    run's scratch space (checkpoints hold the durable copy)."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class _ClientStore(MutableMapping):
    """What both client-state stores share: the federation's client ids, in order."""

    def __init__(self, client_ids: Iterable[int]):
        self._ids = [int(k) for k in client_ids]
        self._known = set(self._ids)

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._known


class DiskClientStates(_ClientStore):
    """Client id to :class:`~fedlib.core.protocol.ClientState`, one file per client in
    ``directory``: a client's state is in memory only while it trains (or is evaluated).

    A client that never stored anything reads as an empty ``ClientState()``, without a file.
    Files are written through an exclusive temporary file and a rename (not flushed to the
    disk: they are the run's scratch space) and read weights-only.
    A round's new states are *staged* (:meth:`stage`, one file each, nothing kept in memory)
    and replace the stored ones only when the round commits (:meth:`commit_staged`), or are
    dropped if it is aborted (:meth:`discard_staged`). Existing ``client_<id>.pt`` files in
    ``directory`` are removed when the store is created, so a new run never reads an old
    run's states.
    """

    _PATTERN = re.compile(r"client_(\d+)\.pt(\.staged)?")

    def __init__(self, directory: str | Path, client_ids: Iterable[int]):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for old in self.directory.iterdir():
            if self._PATTERN.fullmatch(old.name):
                old.unlink()
        super().__init__(client_ids)
        self._stored: set[int] = set()
        self._staged: set[int] = set()

    def _path(self, client_id: int, staged: bool = False) -> Path:
        return self.directory / f"client_{client_id}.pt{'.staged' if staged else ''}"

    def stage(self, client_id: int, state: ClientState) -> None:
        """Write ``state`` as client ``client_id``'s next state, stored at the next
        :meth:`commit_staged`; reads still return the current one."""
        if client_id not in self._known:
            raise KeyError(f"DiskClientStates: unknown client {client_id}.")
        _save(self._path(client_id, staged=True), state.to_payload())
        self._staged.add(client_id)

    def commit_staged(self) -> None:
        """The staged states replace the stored ones."""
        for client_id in sorted(self._staged):
            self._path(client_id, staged=True).replace(self._path(client_id))
            self._stored.add(client_id)
        self._staged.clear()

    def discard_staged(self) -> None:
        """Drop the staged states (an aborted round)."""
        for client_id in self._staged:
            self._path(client_id, staged=True).unlink(missing_ok=True)
        self._staged.clear()

    def __getitem__(self, client_id: int) -> ClientState:
        if client_id not in self._known:
            raise KeyError(client_id)
        if client_id not in self._stored:
            return ClientState()
        return ClientState.from_payload(load_weights(self._path(client_id)))

    def __setitem__(self, client_id: int, state: ClientState) -> None:
        if client_id not in self._known:
            raise KeyError(f"DiskClientStates: unknown client {client_id}.")
        _save(self._path(client_id), state.to_payload())
        self._stored.add(client_id)

    def __delitem__(self, client_id: int) -> None:
        if client_id in self._stored:
            self._path(client_id).unlink()
            self._stored.discard(client_id)


# ---------------------------------------------------------------------------- packed states
ALIGNMENT = 64
"""Byte alignment of each tensor in a packed buffer, that of PyTorch's CPU allocator: a packed
tensor lies in memory as a freshly allocated one does."""

_FIELDS = ("personal", "post_local", "optimizer", "method")
_PACKED_DTYPES = frozenset({
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
    torch.float16, torch.bfloat16, torch.float32, torch.float64,
})
"""Dtypes whose bytes are their values (complex tensors may carry lazy conjugation bits, and
quantized ones a scale: they are kept as they are)."""


class _Slot(tuple):
    """Where one packed tensor lies: ``(index, group, offset, dtype, shape, stride)``, in the
    state's buffer ``group`` (one per dtype), ``offset`` counted in elements of ``dtype``. A
    tuple, so that it is also its own entry in the layout's signature."""

    __slots__ = ()


class _Layout:
    """The structure of a packed state: its four fields' containers with a :class:`_Slot` in
    place of each packed tensor, and the size of each buffer. States of the same structure
    (keys, shapes, dtypes, plain values) share one layout."""

    __slots__ = ("__weakref__", "sizes", "skeleton", "slots")

    def __init__(self, skeleton: tuple, slots: tuple[_Slot, ...], sizes: tuple[int, ...]):
        self.skeleton, self.slots, self.sizes = skeleton, slots, sizes


_LAYOUTS: weakref.WeakValueDictionary[Any, _Layout] = weakref.WeakValueDictionary()


def _atom(value: Any) -> Any:
    """A hashable key that equals another's only for the same value of the same type (floats
    by their bits, so ``-0.0`` and ``0.0`` differ); ``None`` for values compared by identity."""
    kind = type(value)
    if value is None or kind in (bool, int, str, bytes):
        return ("v", kind, value)
    if kind is float:
        return ("v", kind, value.hex())
    return None


class _Packer:
    """One walk over a state: the packed tensors, their slots, the skeleton and its signature
    (the state shares no layout when it holds something compared by identity)."""

    def __init__(self):
        self.tensors: list[torch.Tensor] = []
        self.slots: list[_Slot] = []
        self.groups: dict[torch.dtype, int] = {}  # dtype -> buffer, in order of appearance
        self.sizes: list[int] = []  # bytes of each buffer
        self.shareable = True
        self._seen: dict[int, _Slot] = {}

    def walk(self, value: Any) -> tuple[Any, Any]:
        kind = type(value)
        if (
            kind is torch.Tensor
            and value.dtype in _PACKED_DTYPES
            and value.is_cpu
            and value.layout is torch.strided
            and not value.requires_grad
            and not value.is_nested
            and value.is_contiguous()
        ):
            slot = self._seen.get(id(value))
            if slot is None:  # a tensor held twice is packed once
                dtype = value.dtype
                group = self.groups.get(dtype)
                if group is None:
                    group = self.groups[dtype] = len(self.sizes)
                    self.sizes.append(0)
                used = self.sizes[group]
                slot = _Slot((len(self.slots), group, used // value.element_size(), dtype,
                              tuple(value.shape), value.stride()))
                self._seen[id(value)] = slot
                self.slots.append(slot)
                self.tensors.append(value)
                self.sizes[group] = used - (-value.nbytes // ALIGNMENT) * ALIGNMENT
            return slot, slot
        if kind is dict or kind is OrderedDict:
            skeleton, keys, parts = kind(), [], []
            for key, item in value.items():
                skeleton[key], part = self.walk(item)
                keys.append(_atom(key))
                parts.append(part)
            self.shareable &= None not in keys
            return skeleton, (kind, tuple(keys), tuple(parts))
        if kind is list or kind is tuple:
            walked = [self.walk(item) for item in value]
            return kind(w[0] for w in walked), (kind, tuple(w[1] for w in walked))
        atom = _atom(value)
        self.shareable &= atom is not None
        return value, atom


class PackedState:
    """One client's :class:`~fedlib.core.protocol.ClientState` as one byte buffer per dtype
    and a shared layout: every plain CPU tensor of the state (personal tensors, post-local
    model, optimizer moments, the method's entries) copied into the buffer of its dtype, each
    at a multiple of :data:`ALIGNMENT` bytes (the padding is zeros).

    A state of ``T`` tensors held as such costs ``T`` tensor objects and allocations (about
    450 bytes each besides the data, and a dict entry each); packed, it costs one buffer per
    dtype (a model's float32 weights and int64 counters: two), and the containers are shared
    with every state of the same structure. :meth:`unpack` gives the state back with its
    tensors as views into the buffers (equal values, dtypes, shapes and strides; a tensor held
    twice comes back as one tensor; ``torch.save`` writes each buffer once). Tensors that are
    not plain dense CPU tensors of a real dtype, and values other than containers (dict,
    ``OrderedDict``, list, tuple) and plain numbers and strings, are kept as they are.
    """

    __slots__ = ("buffers", "layout")

    def __init__(self, buffers: tuple[torch.Tensor, ...], layout: _Layout):
        self.buffers, self.layout = buffers, layout

    @classmethod
    def pack(cls, state: ClientState) -> PackedState:
        """Copy ``state``'s tensors into new buffers."""
        packer = _Packer()
        parts = [packer.walk(getattr(state, name)) for name in _FIELDS]
        signature = tuple(p[1] for p in parts)
        layout = _LAYOUTS.get(signature) if packer.shareable else None
        if layout is None:
            layout = _Layout(tuple(p[0] for p in parts), tuple(packer.slots),
                             tuple(packer.sizes))
            if packer.shareable:
                _LAYOUTS[signature] = layout
        buffers = tuple(torch.zeros(size, dtype=torch.uint8) for size in layout.sizes)
        starts = [b.data_ptr() for b in buffers]
        for tensor, (_, group, offset, _, _, _) in zip(packer.tensors, layout.slots, strict=True):
            if tensor.nbytes:  # contiguous CPU tensors: a plain copy of their bytes
                ctypes.memmove(starts[group] + offset * tensor.element_size(), tensor.data_ptr(),
                               tensor.nbytes)
        return cls(buffers, layout)

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers (the tensors' bytes and their alignment padding)."""
        return sum(self.layout.sizes)

    def unpack(self) -> ClientState:
        """The state, its packed tensors views into the buffers (no copy)."""
        storages = [buffer.untyped_storage() for buffer in self.buffers]
        made: list[torch.Tensor | None] = [None] * len(self.layout.slots)

        def build(node: Any) -> Any:
            kind = type(node)
            if kind is _Slot:
                index, group, offset, dtype, shape, stride = node
                tensor = made[index]
                if tensor is None:
                    tensor = made[index] = torch.empty(0, dtype=dtype).set_(
                        storages[group], offset, shape, stride)
                return tensor
            if kind is dict or kind is OrderedDict:
                return kind((k, build(v)) for k, v in node.items())
            if kind is list or kind is tuple:
                return kind(build(v) for v in node)
            return node

        personal, post_local, optimizer, method = (build(n) for n in self.layout.skeleton)
        return ClientState(personal=personal, post_local=post_local, optimizer=optimizer,
                           method=method)


class PackedClientStates(_ClientStore):
    """Client id to :class:`~fedlib.core.protocol.ClientState`, in memory, each state packed
    (:class:`PackedState`): what :class:`~fedlib.core.Simulation` keeps per client by default.

    Reading a client gives a new ``ClientState`` whose tensors are views into the stored
    buffer; a state changes only by assigning it (``store[k] = state``) or through
    :meth:`stage` and :meth:`commit_staged`, as :class:`DiskClientStates` does: a round's new
    states are packed as they come and replace the stored ones when the round commits, or are
    dropped if it is aborted. A client that never stored anything reads as ``ClientState()``.
    """

    def __init__(self, client_ids: Iterable[int]):
        super().__init__(client_ids)
        self._stored: dict[int, PackedState] = {}
        self._staged: dict[int, PackedState] = {}

    def _check(self, client_id: int) -> None:
        if client_id not in self._known:
            raise KeyError(f"PackedClientStates: unknown client {client_id}.")

    def packed(self, client_id: int) -> PackedState:
        """Client ``client_id``'s stored state, packed (no copy)."""
        self._check(client_id)
        packed = self._stored.get(client_id)
        return PackedState.pack(ClientState()) if packed is None else packed

    def stage(self, client_id: int, state: ClientState) -> None:
        """Pack ``state`` as client ``client_id``'s next state, stored at the next
        :meth:`commit_staged`; reads still return the current one."""
        self._check(client_id)
        self._staged[client_id] = PackedState.pack(state)

    def commit_staged(self) -> None:
        """The staged states replace the stored ones."""
        self._stored.update(self._staged)
        self._staged.clear()

    def discard_staged(self) -> None:
        """Drop the staged states (an aborted round)."""
        self._staged.clear()

    def __getitem__(self, client_id: int) -> ClientState:
        if client_id not in self._known:
            raise KeyError(client_id)
        packed = self._stored.get(client_id)
        return ClientState() if packed is None else packed.unpack()

    def __setitem__(self, client_id: int, state: ClientState) -> None:
        self._check(client_id)
        self._stored[client_id] = PackedState.pack(state)

    def __delitem__(self, client_id: int) -> None:
        self._stored.pop(client_id, None)
