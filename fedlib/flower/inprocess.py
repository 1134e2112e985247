"""Flower's message path in one process, without an engine: for tests, notebooks and teaching.

:class:`InProcessGrid` is a Flower :class:`~flwr.serverapp.Grid` whose nodes are
:class:`~flwr.clientapp.ClientApp` objects in this process, one :class:`~flwr.app.Context`
each (its node config and its persistent ``state``). Every message is serialized to the
objects Flower ships over the network and rebuilt from those bytes on the other side, so the
strategy and the client app exchange exactly what a deployment exchanges; the grid records the
bytes of each record (:attr:`InProcessGrid.wire_`). A node can be disconnected
(:meth:`InProcessGrid.disconnect`) to rehearse a failure: its messages are lost, as a dead
SuperNode's are.

:func:`run_in_process` runs a fedlib method this way on a
:class:`~fedlib.data.FederatedDataset`, one node per client.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from torch import nn

from fedlib.core.algorithm import Algorithm
from fedlib.data.base import FederatedDataset
from fedlib.flower.client import (
    ClientSetup,
    FedlibClient,
    NodeStateStore,
    Site,
    fresh_algorithm,
    make_client_app,
)
from fedlib.flower.records import record_bytes
from fedlib.flower.strategy import FedlibStrategy

__all__ = ["InProcessGrid", "InProcessRun", "run_in_process", "transmit"]


def transmit(message: Message) -> tuple[Message, int]:
    """``message`` as the receiver gets it: serialized to Flower's wire objects and rebuilt from
    those bytes; and the number of bytes."""
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(message).items()}
    size = sum(len(c) for c in contents.values())
    received = inflate_object_from_contents(message.object_id, contents)
    # the SuperLink stamps what it assigned (id, delivery) in the metadata
    received.metadata.__dict__["_message_id"] = message.metadata.message_id
    return received, size


@contextlib.contextmanager
def _server_identity(run_id: int) -> Iterator[None]:
    """Flower reads the sender of a new message from the process's task identity (set by its
    engine); here the process plays the SuperLink's ServerApp."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


class InProcessGrid(Grid):
    """A Grid whose nodes are client apps in this process.

    Parameters
    ----------
    client_app : ClientApp
    node_configs : list of dict
        One node config per node (``partition-id``, ``num-partitions``, ...).
    run_config : dict, optional
        The run config every node sees.
    run_id : int, default 1
        Also seeds the nodes' random 64-bit ids (their order differs from the partitions').

    Attributes
    ----------
    contexts : dict of int to Context
        Each node's context; ``context.state`` persists across the run's messages.
    wire_ : list of dict
        One row per message that crossed: ``message_type``, ``round`` (the group id),
        ``node``, ``direction`` ("down" server to node, "up" node to server), ``bytes`` of the
        whole message, and ``bytes_<record>`` and ``entries_<record>`` (tensors or values) of
        each of its records.
    """

    def __init__(
        self,
        client_app: ClientApp,
        node_configs: list[dict[str, Any]],
        *,
        run_config: dict[str, Any] | None = None,
        run_id: int = 1,
    ):
        self.client_app = client_app
        rng = np.random.default_rng(run_id)
        ids = [int(i) for i in rng.integers(2**32, 2**63, size=len(node_configs))]
        self.contexts = {
            node: Context(run_id, node, dict(config), RecordDict(), dict(run_config or {}))
            for node, config in zip(ids, node_configs, strict=True)
        }
        self._run = Run.create_empty(run_id)
        self.run_id = run_id
        self.down: set[int] = set()
        self.listed: set[int] = set()
        self.wire_: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ Grid API
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        with _server_identity(self.run_id):
            return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.down or n in self.listed]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("InProcessGrid delivers in send_and_receive only.")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("InProcessGrid delivers in send_and_receive only.")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver each message to its node's client app and return the replies (a
        disconnected node's messages are lost: no reply, as after a timeout)."""
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            received, size = transmit(message)
            node = message.metadata.dst_node_id
            self._record(received, size, node, "down")
            if node in self.down:
                continue
            try:
                reply = self.client_app(received, self.contexts[node])
            except Exception as exc:  # noqa: BLE001 - a SuperNode turns it into an error reply
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                      f"{type(exc).__name__}: {exc}"), reply_to=received)
            reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            back, size = transmit(reply)
            self._record(back, size, node, "up")
            replies.append(back)
        return replies

    # ------------------------------------------------------------------ helpers
    def _record(self, message: Message, size: int, node: int, direction: str) -> None:
        row = {"message_type": message.metadata.message_type,
               "round": message.metadata.group_id, "node": node, "direction": direction,
               "bytes": size}
        if message.has_content():
            for name, record in message.content.items():
                row[f"bytes_{name}"] = record_bytes(record)
                row[f"entries_{name}"] = len(record)
        self.wire_.append(row)

    def node_of(self, partition: int) -> int:
        """The node id of the node configured with ``partition-id=partition``."""
        return next(n for n, c in self.contexts.items() if c.node_config["partition-id"]
                    == partition)

    def disconnect(self, partition: int, *, listed: bool = False) -> None:
        """Take the node of ``partition`` off the grid: its messages are lost from now on.
        ``listed=True`` keeps it in :meth:`get_node_ids`, as the SuperLink lists a crashed
        SuperNode until its heartbeat expires (the round then waits for its timeout)."""
        node = self.node_of(partition)
        self.down.add(node)
        if listed:
            self.listed.add(node)


@dataclass
class InProcessRun:
    """What :func:`run_in_process` returns."""

    strategy: FedlibStrategy
    grid: InProcessGrid
    result: Result


def in_process_setup(
    algorithm: Algorithm,
    model_fn: Callable[[], nn.Module],
    federation: FederatedDataset,
    *,
    seed: int,
    device: Any = None,
) -> Callable[[Context], ClientSetup]:
    """The nodes' setup: client ``k`` of ``federation`` on the node whose node config says
    ``partition-id=k``, with its own copy of the algorithm (built once per node)."""
    built: dict[int, ClientSetup] = {}

    def setup(context: Context) -> ClientSetup:
        if context.node_id not in built:
            p = int(context.node_config["partition-id"])
            client = FedlibClient(fresh_algorithm(algorithm), model_fn, seed=seed,
                                  device=device)
            site = Site(federation.train[p], federation.test[p], federation.num_classes)
            built[context.node_id] = ClientSetup(
                client, site, p, int(context.node_config["num-partitions"]),
                NodeStateStore(context, p))
        return built[context.node_id]

    return setup


def run_in_process(
    algorithm: Algorithm,
    model_fn: Callable[[], nn.Module],
    federation: FederatedDataset,
    *,
    num_rounds: int,
    seed: int = 0,
    device: Any = None,
    run_id: int = 1,
    timeout: float = 3600.0,
    on_round: Callable[..., None] | None = None,
    quiet: bool = True,
    **strategy_options: Any,
) -> InProcessRun:
    """Run ``algorithm`` for ``num_rounds`` through :class:`FedlibStrategy` and the fedlib
    client app, one in-process node per client of ``federation``.

    ``strategy_options`` go to :class:`FedlibStrategy` (``fraction``, ``on_node_failure``,
    ``evaluate``, ...). ``on_round(run, record)`` is called after each aggregation, e.g. to
    disconnect a node (``run.grid.disconnect(k)``). ``quiet`` keeps Flower's own log to
    warnings. The result equals
    :class:`~fedlib.core.Simulation`'s for the same seed and clients (the tests check it).
    """
    k = federation.num_clients
    client_app = make_client_app(
        in_process_setup(algorithm, model_fn, federation, seed=seed, device=device))
    grid = InProcessGrid(
        client_app, [{"partition-id": p, "num-partitions": k} for p in range(k)], run_id=run_id)
    holder: dict[str, InProcessRun] = {}

    def after_round(strategy: FedlibStrategy, record: dict[str, Any]) -> None:
        if on_round is not None:
            on_round(holder["run"], record)

    strategy = FedlibStrategy(fresh_algorithm(algorithm), model_fn, seed=seed,
                              on_round=after_round, **strategy_options)
    run = InProcessRun(strategy, grid, Result())
    holder["run"] = run
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    if quiet:
        flwr_log.setLevel(logging.WARNING)
    try:
        with _server_identity(run_id):
            run.result = strategy.start(grid, strategy.initial_arrays(), num_rounds=num_rounds,
                                        timeout=timeout)
    finally:
        flwr_log.setLevel(level)
    return run
