"""The client half on a Flower node: one round of a fedlib method's local work per message.

A :class:`FedlibClient` answers three kinds of message from :class:`~fedlib.flower.strategy.
FedlibStrategy`:

* ``query.identify``: the node's ``partition-id`` (from its node config) and the size of its
  data, so the server maps Flower's random node ids to fedlib's client ids;
* ``train``: the round message, as records; the reply carries the client's arrays, side data
  and metrics. The local work is the in-process simulator's own function
  (:func:`fedlib.core.rounds.local_round`, seeded by ``(seed, round, client)``), so a deployment
  and :class:`~fedlib.core.Simulation` give the same global model for the same seed and
  partitions;
* ``evaluate``: the global model (and the client's own model, for specialization) scored on
  the node's test split.

The client's persistent :class:`~fedlib.core.protocol.ClientState` stays on the node
(:class:`NodeStateStore`) and is committed in two phases, as in the simulator: the state after
round ``t`` is kept aside, and becomes the client's state only when the server's next message
says that its round-``t`` reply was aggregated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn
from torch.utils.data import Dataset

from fedlib.core.algorithm import Algorithm, build_model
from fedlib.core.checkpoint import load_weights, save_weights
from fedlib.core.evaluate import evaluate
from fedlib.core.protocol import ClientReply, ClientState, RoundMessage
from fedlib.core.rounds import finetune_for_evaluation
from fedlib.core.rounds import local_round as seeded_local_round
from fedlib.flower.records import (
    FEDLIB,
    NUM_EXAMPLES,
    from_array_record,
    reply_content,
    round_message,
    state_from_bytes,
    state_to_bytes,
)
from fedlib.utils import device as default_device

__all__ = [
    "ClientSetup",
    "FedlibClient",
    "NodeStateStore",
    "Site",
    "local_round",
    "make_client_app",
]

IDENTIFY = "query.identify"
"""Message type of the identity handshake."""
EVAL_ARRAYS = "eval"
"""Record of an evaluate message holding the weights the global model is evaluated with."""


@dataclass
class Site:
    """One node's data: its training and test splits, and the federation's number of classes."""

    train: Dataset
    test: Dataset
    num_classes: int


def local_round(
    algorithm: Algorithm,
    model: nn.Module,
    message: RoundMessage,
    state: ClientState,
    data: Dataset,
    *,
    seed: int,
    client_id: int,
    num_classes: int,
    initial_weights: Mapping[str, torch.Tensor],
    device: torch.device,
    keep_post_local: bool | None = None,
) -> tuple[ClientReply, ClientState]:
    """One client's seeded local round on a node: :func:`fedlib.core.rounds.local_round` (what
    :class:`~fedlib.core.Simulation` runs), with torch's global random state restored
    afterwards, since a node process answers other messages too."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return seeded_local_round(
            algorithm, model, message, state, data, seed=seed, client_id=client_id,
            num_classes=num_classes, initial_weights=initial_weights, device=device,
            keep_post_local=keep_post_local,
        )


class NodeStateStore:
    """A client's persistent state on its node, committed in two phases.

    ``pending`` holds the state after the client's latest round; ``committed`` the state after
    the last round whose reply the server aggregated. :meth:`load` promotes ``pending`` when the
    server says its round was aggregated (``commit_round``) and drops it otherwise, exactly as
    the simulator stores a client's new state only when its round commits.

    The states live in ``context.state`` (a Flower record kept for the run on this node), or,
    with ``state_dir``, in files there (``run-<id>/partition-<k>.{committed,pending}.pt``), which
    survive a restart of the node.
    """

    RECORD = "fedlib.client-state"

    def __init__(self, context: Context, partition_id: int, state_dir: str | Path | None = None):
        self.context = context
        self.partition_id = partition_id
        self.folder = None
        if state_dir:
            self.folder = Path(state_dir) / f"run-{context.run_id}"

    # each slot is (round, state) or None
    def _read(self, slot: str) -> tuple[int, ClientState] | None:
        if self.folder is not None:
            path = self.folder / f"partition-{self.partition_id}.{slot}.pt"
            if not path.is_file():
                return None
            payload = load_weights(path)
            return int(payload["round"]), ClientState.from_payload(payload["state"])
        record = self.context.state.get(self.RECORD)
        if record is None or f"{slot}-round" not in record:
            return None
        return int(record[f"{slot}-round"]), state_from_bytes(record[slot])

    def _write(self, slot: str, entry: tuple[int, ClientState] | None) -> None:
        if self.folder is not None:
            path = self.folder / f"partition-{self.partition_id}.{slot}.pt"
            if entry is None:
                path.unlink(missing_ok=True)
            else:
                self.folder.mkdir(parents=True, exist_ok=True)
                save_weights(path, {"round": entry[0], "state": entry[1].to_payload()})
            return
        record = self.context.state.get(self.RECORD)
        values = dict(record) if record is not None else {}
        values.pop(slot, None)
        values.pop(f"{slot}-round", None)
        if entry is not None:
            values[f"{slot}-round"] = entry[0]
            values[slot] = state_to_bytes(entry[1])
        self.context.state[self.RECORD] = ConfigRecord(values)

    def load(self, commit_round: int) -> ClientState:
        """The committed state, after promoting the pending one if ``commit_round`` (the last
        round in which the server aggregated this client's reply, -1 for none) is its round."""
        pending = self._read("pending")
        if pending is not None:
            if pending[0] == commit_round:
                self._write("committed", pending)
            self._write("pending", None)
        committed = self._read("committed")
        if commit_round < 0:
            return ClientState()
        if committed is None or committed[0] != commit_round:
            found = "none" if committed is None else f"round {committed[0] + 1}'s"
            raise RuntimeError(
                f"partition {self.partition_id}: the server aggregated this client's reply of "
                f"round {commit_round + 1}, but the node holds {found} state (was the node "
                "restarted without a 'state-dir' in its node config?)."
            )
        return committed[1]

    def save_pending(self, round_: int, state: ClientState) -> None:
        """Keep the state after ``round_`` until the server says whether it was aggregated."""
        self._write("pending", (round_, state))


class FedlibClient:
    """The client half of a fedlib method on one node.

    Parameters
    ----------
    algorithm : Algorithm
    model_fn : callable returning a fresh ``nn.Module``
        Built under ``seed`` and passed through ``algorithm.prepare_model``, as the server and
        the simulator build it, so that every party starts from the same initial weights.
    seed : int
        The run's seed: every local round is seeded by ``(seed, round, client)``.
    device : torch.device or str, optional
        Default :func:`fedlib.device`.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        model_fn: Callable[[], nn.Module],
        *,
        seed: int,
        device: torch.device | str | None = None,
    ):
        self.algorithm = algorithm
        self.seed = seed
        self.device = torch.device(device) if device is not None else default_device()
        self.model = build_model(lambda: algorithm.prepare_model(model_fn()), seed)
        self.initial_weights = {
            k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
        }

    def identify(self, msg: Message, site: Site, partition_id: int, num_partitions: int):
        """The handshake's reply: who this node is and how much data it holds."""
        values = {
            "partition-id": partition_id,
            "num-partitions": num_partitions,
            "num-examples": len(site.train),
            "num-test-examples": len(site.test),
            "num-classes": site.num_classes,
        }
        return Message(RecordDict({FEDLIB: ConfigRecord(values)}), reply_to=msg)

    def _check_addressee(self, msg: Message, partition_id: int) -> dict:
        fields = dict(msg.content[FEDLIB])
        if int(fields["partition-id"]) != partition_id:
            raise RuntimeError(
                f"a message for partition {fields['partition-id']} reached the node of "
                f"partition {partition_id}."
            )
        return fields

    def train(self, msg: Message, site: Site, partition_id: int, store: NodeStateStore):
        """One round of local work; the reply holds the arrays, side data and metrics."""
        fields = self._check_addressee(msg, partition_id)
        message = round_message(msg.content)
        state = store.load(int(fields["commit-round"]))
        reply, new_state = local_round(
            self.algorithm, self.model, message, state, site.train, seed=self.seed,
            client_id=partition_id, num_classes=site.num_classes,
            initial_weights=self.initial_weights, device=self.device,
            keep_post_local=bool(fields.get("keep-post-local", False)),
        )
        store.save_pending(message.round, new_state)
        content = reply_content(reply, **{"partition-id": partition_id, "round": message.round})
        return Message(content, reply_to=msg)

    def evaluate(self, msg: Message, site: Site, partition_id: int, store: NodeStateStore):
        """Scores on the node's test split: ``gen_*`` of the global model (the server's
        evaluation weights) and, when asked, ``spec_*`` of the client's own model
        (``Algorithm.spec_weights``, then ``finetune_for_eval``, seeded as the simulator seeds
        it)."""
        fields = self._check_addressee(msg, partition_id)
        state = store.load(int(fields["commit-round"]))
        options = dict(num_classes=site.num_classes, device=self.device, metrics="basic")
        metrics: dict[str, float] = {NUM_EXAMPLES: len(site.test)}
        if len(site.test):
            self.model.load_state_dict(from_array_record(msg.content[EVAL_ARRAYS]))
            for name, value in evaluate(self.model.to(self.device), site.test, **options).items():
                metrics[f"gen_{name}"] = value
            if fields.get("spec"):
                self._load_own_model(round_message(msg.content), state, site, partition_id)
                for name, value in evaluate(self.model, site.test, **options).items():
                    metrics[f"spec_{name}"] = value
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    def _load_own_model(
        self, message: RoundMessage, state: ClientState, site: Site, partition_id: int
    ) -> None:
        """The client's model for specialization, as ``Simulation.client_model`` builds it."""
        algorithm = self.algorithm
        full = dict(self.initial_weights)
        full.update(message.arrays)
        self.model.load_state_dict(algorithm.spec_weights(full, state))
        if type(algorithm).finetune_for_eval is Algorithm.finetune_for_eval or not len(site.train):
            return
        finetune_for_evaluation(
            algorithm, self.model, message, state, site.train, seed=self.seed,
            client_id=partition_id, num_classes=site.num_classes, device=self.device,
        )


@dataclass
class ClientSetup:
    """What a node needs to answer: the client half, its data, its identity and its store."""

    client: FedlibClient
    site: Site
    partition_id: int
    num_partitions: int
    store: NodeStateStore


def make_client_app(setup: Callable[[Context], ClientSetup]) -> ClientApp:
    """A Flower :class:`ClientApp` that answers :class:`~fedlib.flower.strategy.FedlibStrategy`.

    ``setup(context)`` builds the node's :class:`ClientSetup` from the run config (method,
    model, seed) and the node config (``partition-id``, ``num-partitions``, ``data-dir``,
    ``state-dir``); see :func:`fedlib.flower.app.client_app` for the deployed app.
    """
    app = ClientApp()

    @app.query("identify")
    def identify(msg: Message, context: Context) -> Message:
        s = setup(context)
        return s.client.identify(msg, s.site, s.partition_id, s.num_partitions)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        s = setup(context)
        return s.client.train(msg, s.site, s.partition_id, s.store)

    @app.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        s = setup(context)
        return s.client.evaluate(msg, s.site, s.partition_id, s.store)

    return app


def fresh_algorithm(algorithm: Algorithm) -> Algorithm:
    """An independent copy of ``algorithm`` for one party (no object is shared between the
    server and the clients, as on separate machines)."""
    return copy.deepcopy(algorithm)
