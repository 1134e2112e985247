"""What crosses the wire each round, and the three places state lives.

- :class:`GlobalState` lives on the server (weights, server-side extras, rounds done).
- ``ClientState`` (a plain dict of tensors and JSON-able values) lives on one client and
  persists across rounds: personal heads, optimizer moments, sub-centroids. The server never
  reads it.
- :class:`RoundMessage` (server to client) and :class:`ClientReply` (client to server) are
  frozen: arrays plus JSON-able scalars, all that crosses per round. Raw images never do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

ClientState = dict[str, Any]
"""Per-client persistent state: tensors, numbers, strings, and nested dicts/lists of them."""


@dataclass(frozen=True)
class RoundMessage:
    """Server to client, once per round.

    Attributes
    ----------
    round : int
        The round being played, 0-based.
    arrays : mapping of str to Tensor
        Named tensors (usually the shared subset of the global state dict).
    config : mapping of str to JSON-able value
        Round settings decided by the server, e.g. the learning rate after its schedule.
    """

    round: int
    arrays: Mapping[str, torch.Tensor]
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientReply:
    """Client to server, once per round: the update, its weight and a few metrics."""

    client_id: int
    arrays: Mapping[str, torch.Tensor]
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass
class GlobalState:
    """Server state: the global weights, method extras, and how many rounds are done."""

    weights: dict[str, torch.Tensor]
    round: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def wire_size(arrays: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the tensors in a message or reply."""
    return sum(t.numel() * t.element_size() for t in arrays.values())
