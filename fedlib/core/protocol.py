"""What crosses the wire each round, and the three places state lives.

- :class:`GlobalState` lives on the server (weights, server-side extras, rounds done).
- :class:`ClientState` lives on one client and persists across rounds: personal layers,
  the model after local training, optimizer moments, and the method's own named entries
  (sub-centroids, a personal model, a control variate). The server never reads it.
- :class:`RoundMessage` (server to client) and :class:`ClientReply` (client to server) are
  frozen and carry two channels of tensors: ``arrays``, which the server averages, and
  ``side``, which it never averages (class counts, per-class gradients, control variates,
  loss statistics). Raw images never cross.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

Arrays = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class RoundMessage:
    """Server to client, once per round.

    Attributes
    ----------
    round : int
        The round being played, 0-based.
    arrays : mapping of str to Tensor
        The shared model tensors (the averaged keys of the global state dict).
    side : mapping of str to Tensor
        Tensors the client needs that are not model weights and are never averaged (CReFF's
        re-trained classifier, SCAFFOLD's server control variate).
    config : mapping of str to JSON-able value
        Round settings decided by the server, e.g. the learning rate after its schedule.
    """

    round: int
    arrays: Arrays
    side: Arrays = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientReply:
    """Client to server, once per round.

    Attributes
    ----------
    client_id : int
    arrays : mapping of str to Tensor
        The trained values of the keys the server sent; averaged with weight ``num_examples``.
    num_examples : int
        ``n_k``, the client's number of training examples.
    side : mapping of str to Tensor
        Data for the server that is never averaged (class counts, per-class gradients,
        control-variate updates, a personal head uploaded for evaluation only).
    metrics : mapping of str to float
        Training statistics (``train_loss`` and method-specific ones).
    """

    client_id: int
    arrays: Arrays
    num_examples: int
    side: Arrays = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass
class ClientState:
    """What one client keeps between rounds; it never leaves the client.

    Attributes
    ----------
    personal : dict of str to Tensor
        State-dict entries the server does not send (personal layers, integer buffers),
        as left by the client's last local training.
    post_local : dict of str to Tensor or None
        The whole model after the last local training (kept when ``spec_model="post_local"``).
    optimizer : dict or None
        The local optimizer's ``state_dict`` (kept when ``optimizer_state="persist"``).
    method : dict of str to object
        The method's own entries; their names and meaning are declared by
        ``Algorithm.client_state_fields`` (e.g. Ditto's ``personal_model``).

    Local training works on a working copy (:func:`fedlib.core.algorithm.working_copy`: new
    containers around the same tensors, which hooks replace, never modify), and the new state
    replaces the stored one only when the round commits.
    """

    personal: dict[str, torch.Tensor] = field(default_factory=dict)
    post_local: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    method: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """Plain containers of tensors (for weights-only checkpoints)."""
        payload: dict[str, Any] = {"personal": self.personal, "method": self.method}
        if self.post_local is not None:
            payload["post_local"] = self.post_local
        if self.optimizer is not None:
            payload["optimizer"] = self.optimizer
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ClientState:
        """The inverse of :meth:`to_payload`."""
        return cls(
            personal=dict(payload.get("personal", {})),
            post_local=payload.get("post_local"),
            optimizer=payload.get("optimizer"),
            method=dict(payload.get("method", {})),
        )


@dataclass
class GlobalState:
    """Server state: the global weights, method extras, and how many rounds are done."""

    weights: dict[str, torch.Tensor]
    round: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def wire_size(arrays: Arrays) -> int:
    """Bytes of the tensors in one channel of a message or reply."""
    return sum(t.numel() * t.element_size() for t in arrays.values())
