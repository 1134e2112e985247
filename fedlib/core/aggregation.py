"""Weighted aggregation of client arrays: all at once, or streamed one client at a time."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch


def _normalized(weights: Sequence[float], owner: str) -> list[float]:
    """``w_k / sum_j w_j`` as Python floats, computed in float64 exactly as the average uses
    them; refuses negative, non-finite or all-zero weights."""
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(
            f"{owner}: 'weights' must be finite, >= 0 and not all zero, got {list(weights)}."
        )
    return (w / w.sum()).tolist()


def weighted_average(
    arrays: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    r"""Key-wise weighted mean ``w = \sum_k (n_k / \sum_j n_j) w_k`` (McMahan et al., 2017).

    Parameters
    ----------
    arrays : sequence of mappings with the same keys
    weights : sequence of non-negative numbers (e.g. numbers of examples), not all zero

    Returns
    -------
    dict of str to Tensor, in the dtype of the first client's arrays. The sum runs in float64
    so the result does not depend on the order of clients beyond rounding to the final dtype.
    :class:`StreamingAverage` gives the same bits one client at a time.
    """
    if len(arrays) == 0:
        raise ValueError("weighted_average: 'arrays' must hold at least one client's arrays.")
    if len(arrays) != len(weights):
        raise ValueError(f"weighted_average: got {len(arrays)} arrays but {len(weights)} weights.")
    w = _normalized(weights, "weighted_average")
    keys = list(arrays[0].keys())
    for i, a in enumerate(arrays[1:], start=1):
        if list(a.keys()) != keys:
            raise ValueError(f"weighted_average: client {i} sent keys that differ from client 0's.")
    stream = _Accumulator()
    for wk, a in zip(w, arrays, strict=True):
        stream.add(a, wk)
    return stream.result()


def nonfinite_error(arrays: Mapping[str, torch.Tensor]) -> FloatingPointError:
    """The error for arrays that hold a NaN or an infinity, naming (up to three of) their
    keys."""
    bad = [k for k, v in arrays.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    return FloatingPointError(f"its update has non-finite values in {bad[:3]}")


class _Accumulator:
    """``acc_key += w * a_key`` in float64, key by key, in the order of the calls.

    The sums are views into one float64 buffer, and each client's arrays are copied, converted
    to float64, into a scratch buffer of the same layout by one batched copy; adding a client
    is then one product and one sum over the buffer, whatever the number of keys (the same
    element-wise operations, so the same bits, as a sum per key).
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] | None = None
        self.dtypes: dict[str, torch.dtype] = {}
        self._flat: torch.Tensor | None = None
        self._scratch: torch.Tensor | None = None
        self._slots: list[torch.Tensor] = []
        self._wide = False  # a float64 array: its finite values may sum to an infinity

    def _start(self, arrays: Mapping[str, torch.Tensor], stacked: bool) -> None:
        if self.sums is not None:
            return
        shapes = {k: v.shape[int(stacked):] for k, v in arrays.items()}
        first = next(iter(arrays.values()), None)
        device = first.device if first is not None else None
        total = sum(math.prod(shape) for shape in shapes.values())
        self._flat = torch.zeros(total, dtype=torch.float64, device=device)
        self._scratch = torch.empty_like(self._flat)
        self.sums, offset = {}, 0
        for key, shape in shapes.items():
            size = math.prod(shape)
            self.sums[key] = self._flat[offset:offset + size].view(shape)
            self._slots.append(self._scratch[offset:offset + size].view(shape))
            offset += size
        self.dtypes = {k: v.dtype for k, v in arrays.items()}
        self._wide = any(d.itemsize >= 8 and d.is_floating_point for d in self.dtypes.values())

    def add(
        self, arrays: Mapping[str, torch.Tensor], weight: float, *, check_finite: bool = False
    ) -> None:
        """Add ``weight * arrays``; with ``check_finite``, first raise ``FloatingPointError``
        (naming the keys, nothing added) if an array holds a NaN or an infinity."""
        self._start(arrays, stacked=False)
        if not self._slots:  # nothing shared (a local-only method)
            return
        torch._foreach_copy_(self._slots, [arrays[key] for key in self.sums])
        if check_finite and not self._scratch_finite():
            raise nonfinite_error(arrays)
        self._flat += self._scratch.mul_(weight)

    def _scratch_finite(self) -> bool:
        """Whether every value in the scratch buffer is finite: one sum (a float64 sum of
        narrower floats and integers cannot overflow, and a NaN or infinity makes it
        non-finite), or an element-wise test when an array was float64."""
        if self._wide:
            return bool(torch.isfinite(self._scratch).all())
        return math.isfinite(self._scratch.sum())

    def add_stacked(self, arrays: Mapping[str, torch.Tensor], weights: torch.Tensor) -> None:
        """``acc += sum_i weights[i] * arrays[key][i]``: the clients' arrays as one float64
        matrix (a row per client, its columns in the buffer's layout), added to every key's
        sum at once by one matrix-vector product."""
        self._start(arrays, stacked=True)
        if not self._slots:
            return
        rows = torch.cat(
            [arrays[key].reshape(len(weights), acc.numel()).to(torch.float64)
             for key, acc in self.sums.items()],
            dim=1,
        )
        self._flat.addmv_(rows.t(), weights)

    def result(self, scale: float | None = None) -> dict[str, torch.Tensor]:
        if self.sums is None:
            raise ValueError("weighted_average: nothing was added.")
        if scale is None:
            return {k: v.to(self.dtypes[k], copy=True) for k, v in self.sums.items()}
        return {k: (v * scale).to(self.dtypes[k]) for k, v in self.sums.items()}


class StreamingAverage:
    r"""The weighted mean of clients' arrays, added one client at a time: a running sum in
    float64, so a round never holds more than one client's arrays.

    The weights are announced first (``expected``: client id to weight, e.g. ``n_k`` of every
    client sampled this round) and normalised as :func:`weighted_average` normalises them;
    each :meth:`add` then adds ``(w_k / \sum_j w_j) a_k`` in float64. Adding the clients in the
    order of ``expected`` gives :func:`weighted_average`'s result bit for bit. When some
    announced clients never arrive (a client failed and was skipped), the sum is rescaled by
    ``\sum_j w_j / \sum_{k \text{ added}} w_k``: the same mean up to float64 rounding.

    Parameters
    ----------
    expected : mapping of client id to weight
        Every weight >= 0, finite, not all zero.
    """

    def __init__(self, expected: Mapping[int, float]):
        self._ids = list(expected)
        self._raw = {k: float(v) for k, v in expected.items()}
        self._weights = dict(
            zip(self._ids, _normalized(list(self._raw.values()), "StreamingAverage"), strict=True)
        )
        self._acc = _Accumulator()
        self._added: list[int] = []
        self._added_set: set[int] = set()
        self._keys: list[str] | None = None

    @property
    def added(self) -> list[int]:
        """The ids of the clients added so far, in order."""
        return list(self._added)

    def _check_new(
        self, client_ids: list[int], arrays: Mapping[str, torch.Tensor], who: str
    ) -> None:
        """Each client announced and not added yet; the same keys as the first client's."""
        for client_id in client_ids:
            if client_id not in self._weights:
                raise KeyError(f"StreamingAverage: client {client_id} was not announced.")
            if client_id in self._added_set:
                raise ValueError(f"StreamingAverage: client {client_id} was already added.")
        keys = list(arrays.keys())
        if self._keys is None:
            self._keys = keys
        elif keys != self._keys:
            raise ValueError(
                f"StreamingAverage: {who} sent keys that differ from client "
                f"{self._added[0]}'s."
            )

    def add(
        self, client_id: int, arrays: Mapping[str, torch.Tensor], *, check_finite: bool = False
    ) -> None:
        """Add one client's arrays (its announced weight). With ``check_finite``, an array
        holding a NaN or an infinity raises ``FloatingPointError`` (naming the keys) and the
        client is not added: the same test as :func:`~fedlib.core.rounds.check_finite`, at
        the cost of one sum over the arrays the average converts anyway."""
        self._check_new([client_id], arrays, f"client {client_id}")
        self._acc.add(arrays, self._weights[client_id], check_finite=check_finite)
        self._added.append(client_id)
        self._added_set.add(client_id)

    def add_stacked(self, client_ids: list[int], arrays: Mapping[str, torch.Tensor]) -> None:
        """Add several clients at once, ``arrays[key][i]`` being client ``client_ids[i]``'s
        (the clients trained together by the vectorized path). The sum is the same up to
        float64 rounding, not bit for bit, as adding them one by one."""
        self._check_new(client_ids, arrays, f"clients {client_ids}")
        first = next(iter(arrays.values()), None)
        device = first.device if first is not None else None
        weights = torch.tensor(
            [self._weights[k] for k in client_ids], dtype=torch.float64, device=device
        )
        self._acc.add_stacked(arrays, weights)
        self._added.extend(client_ids)
        self._added_set.update(client_ids)

    def result(self) -> dict[str, torch.Tensor]:
        """The weighted mean of the clients added (in the first client's dtypes)."""
        if not self._added:
            raise ValueError("StreamingAverage: no client was added.")
        if self._added == self._ids:
            return self._acc.result()
        total = sum(self._raw.values())
        kept = sum(self._raw[k] for k in self._added)
        if kept <= 0:
            raise ValueError(
                "StreamingAverage: the clients added have weights that sum to 0, got "
                f"{[self._raw[k] for k in self._added]}."
            )
        return self._acc.result(scale=total / kept)


class StreamedReplies(list):
    """The replies of a round whose arrays were already averaged while the clients trained.

    A list of :class:`~fedlib.core.protocol.ClientReply` with empty ``arrays`` (their
    ``side``, ``metrics`` and ``num_examples`` are kept) and ``averaged``, the
    :class:`StreamingAverage` of the arrays with the algorithm's client weights. The simulator
    passes this to ``Algorithm.aggregate`` when the method keeps FedAvg's ``aggregate`` and
    ``client_weights``, so a round never holds every client's arrays.
    """

    def __init__(self, replies, averaged: dict[str, torch.Tensor]):
        super().__init__(replies)
        self.averaged = averaged
