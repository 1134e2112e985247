"""Compact storage for what a simulation keeps per client: history rows in typed columns, and
client states that can live on disk between the rounds in which the client trains."""

from __future__ import annotations

import os
import re
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedlib.core.checkpoint import load_weights
from fedlib.core.protocol import ClientState

__all__ = ["DiskClientStates", "RecordTable"]


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


class DiskClientStates(MutableMapping):
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
        self._ids = [int(k) for k in client_ids]
        self._known = set(self._ids)
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

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._known
