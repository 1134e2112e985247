"""What crosses the wire on Flower: fedlib's round messages and replies as Flower records.

A :class:`~fedlib.core.protocol.RoundMessage` or :class:`~fedlib.core.protocol.ClientReply`
becomes one :class:`flwr.app.RecordDict` whose records keep fedlib's two tensor channels apart:

=============  ==============  ===========================================================
record         Flower type     holds
=============  ==============  ===========================================================
``arrays``     ArrayRecord     the tensors the server averages (``.arrays``)
``side``       ArrayRecord     the tensors it never averages (``.side``): class counts,
                               control variates, per-class gradients, loss statistics
``config``     ConfigRecord    the round settings (``RoundMessage.config``, e.g. ``lr``)
``metrics``    MetricRecord    ``num-examples`` and the training statistics of a reply
``fedlib``     ConfigRecord    the adapter's bookkeeping: round, partition id, and the last
                               round whose reply from this partition was aggregated
=============  ==============  ===========================================================

Tensors keep their dtype and shape exactly (Flower stores each as a numpy array), so a message
that went through the wire equals the one that was sent, bit for bit. A client's persistent
:class:`~fedlib.core.protocol.ClientState` never crosses: :func:`state_to_bytes` serializes it
for the node's own storage (``Context.state`` or a state folder).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedlib.core.protocol import ClientReply, ClientState, RoundMessage

__all__ = [
    "ARRAYS",
    "CONFIG",
    "FEDLIB",
    "METRICS",
    "NUM_EXAMPLES",
    "SIDE",
    "client_reply",
    "from_array_record",
    "message_bytes",
    "message_content",
    "record_bytes",
    "reply_content",
    "round_message",
    "state_from_bytes",
    "state_to_bytes",
    "to_array_record",
]

ARRAYS = "arrays"
SIDE = "side"
CONFIG = "config"
METRICS = "metrics"
FEDLIB = "fedlib"
NUM_EXAMPLES = "num-examples"
"""Metric key of ``n_k`` (Flower's own strategies weight by this key too)."""

_SCALARS = (bool, int, float, str, bytes)


def to_array_record(arrays: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """An :class:`ArrayRecord` of detached CPU tensors, in the mapping's order."""
    if not arrays:
        return ArrayRecord()
    return ArrayRecord({k: v.detach().cpu() for k, v in arrays.items()})


def from_array_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The tensors of an :class:`ArrayRecord` (dtype and shape as they were sent)."""
    return dict(record.to_torch_state_dict()) if len(record) else {}


def _config_record(values: Mapping[str, Any], owner: str) -> ConfigRecord:
    """A :class:`ConfigRecord` of scalars and same-type lists; anything else is refused (it
    would not survive the wire unchanged)."""
    for key, value in values.items():
        items = value if isinstance(value, list | tuple) else [value]
        if not all(isinstance(v, _SCALARS) for v in items) or len({type(v) for v in items}) > 1:
            raise TypeError(
                f"{owner}: config entry {key!r} must be a bool, int, float, str or bytes, or a "
                f"list of one of those types, got {value!r}."
            )
    return ConfigRecord({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})


def message_content(message: RoundMessage, **bookkeeping: Any) -> RecordDict:
    """The records of one round message (server to client); ``bookkeeping`` goes to the
    ``fedlib`` record beside the round."""
    return RecordDict(
        {
            ARRAYS: to_array_record(message.arrays),
            SIDE: to_array_record(message.side),
            CONFIG: _config_record(message.config, "message_content"),
            FEDLIB: _config_record({"round": message.round, **bookkeeping}, "message_content"),
        }
    )


def round_message(content: RecordDict) -> RoundMessage:
    """The inverse of :func:`message_content`."""
    return RoundMessage(
        round=int(content[FEDLIB]["round"]),
        arrays=from_array_record(content[ARRAYS]),
        side=from_array_record(content[SIDE]),
        config=dict(content[CONFIG]),
    )


def reply_content(reply: ClientReply, **bookkeeping: Any) -> RecordDict:
    """The records of one client reply (client to server)."""
    metrics = {NUM_EXAMPLES: int(reply.num_examples)}
    metrics.update({k: float(v) for k, v in reply.metrics.items()})
    return RecordDict(
        {
            ARRAYS: to_array_record(reply.arrays),
            SIDE: to_array_record(reply.side),
            METRICS: MetricRecord(metrics),
            FEDLIB: _config_record(bookkeeping, "reply_content"),
        }
    )


def client_reply(content: RecordDict, client_id: int) -> ClientReply:
    """The inverse of :func:`reply_content`, for client ``client_id``."""
    metrics = dict(content[METRICS])
    num_examples = int(metrics.pop(NUM_EXAMPLES))
    return ClientReply(
        client_id=client_id,
        arrays=from_array_record(content[ARRAYS]),
        num_examples=num_examples,
        side=from_array_record(content[SIDE]),
        metrics={k: float(v) for k, v in metrics.items()},
    )


def record_bytes(record: Any) -> int:
    """Bytes of a record as Flower ships it: its serialized objects (for an ArrayRecord, one
    object per array chunk plus the record's own)."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(record).values())


def message_bytes(message: Message) -> int:
    """Bytes of a whole message as Flower ships it: the content's objects and the message's."""
    return record_bytes(message)


def state_to_bytes(state: ClientState) -> bytes:
    """A client's persistent state as bytes (``torch.save`` of plain containers)."""
    buffer = io.BytesIO()
    torch.save(state.to_payload(), buffer)
    return buffer.getvalue()


def state_from_bytes(data: bytes) -> ClientState:
    """The inverse of :func:`state_to_bytes`, read weights-only (no arbitrary unpickling)."""
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return ClientState.from_payload(payload)
