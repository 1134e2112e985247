"""The server half on Flower: a Strategy that drives a fedlib method's server hooks.

:class:`FedlibStrategy` is a Flower message-API :class:`~flwr.serverapp.strategy.Strategy`.
Each round it does what :class:`~fedlib.core.Simulation` does in one process:

1. sample the round's clients with the simulator's rule (:func:`sample_partitions`: seeded by
   ``(seed, round)``, the same ids for the same seed);
2. send each one ``algorithm.message_for(state, client)`` as records
   (:mod:`fedlib.flower.records`);
3. sort the replies by client id and call ``algorithm.aggregate`` on them.

Flower names nodes by random 64-bit ids, new at every start; fedlib names clients
``0..K-1``. Before the first round the strategy asks every node for its ``partition-id``
(a ``query.identify`` handshake) and keeps the map. The global state (weights and the method's
server-side extras, such as SCAFFOLD's control variate or FedAdam's moments) lives in the
strategy; the ``arrays`` Flower passes between rounds are its weights, returned for Flower's
``Result``.

The first global model is the server's initialisation (the simulator's default
``round_order="train_first"``); the simulator's ``"aggregate_first"`` order, in which the first
global model averages the clients' own initialisations, has no counterpart here.

A node that fails, times out or sends a non-finite or malformed update is handled by
``on_node_failure``: ``"fail"`` stops the run with :class:`NodeFailure` (Flower then reports
the run as failed and no model is written), ``"skip"`` aggregates the replies that arrived, as
the simulator's ``on_client_error="skip"`` does. Either way a failed client's state is left as
it was before the round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import nn

from fedlib._validation import NONE, AnyOf, InstanceOf, Interval, Options, validate_params
from fedlib.core.algorithm import Algorithm, build_model
from fedlib.core.protocol import ClientReply, GlobalState
from fedlib.core.rounds import aggregate_round, check_finite
from fedlib.flower.client import EVAL_ARRAYS, IDENTIFY
from fedlib.flower.records import (
    FEDLIB,
    NUM_EXAMPLES,
    client_reply,
    message_content,
    to_array_record,
)

__all__ = ["FedlibStrategy", "NodeFailure", "sample_partitions"]

logger = logging.getLogger("fedlib")

class NodeFailure(RuntimeError):
    """A round could not be completed as configured (``on_node_failure``)."""


def sample_partitions(
    round_: int,
    *,
    num_partitions: int,
    fraction: float,
    seed: int,
    client_sampling: str = "uniform",
    sizes: list[int] | None = None,
) -> list[int]:
    """The sorted ids of the clients that train in ``round_``: the rule of
    ``Simulation.sample_clients``, ``m = max(1, round(fraction * K))`` drawn without
    replacement by ``numpy.random.default_rng([seed, round])``, uniformly or in proportion to
    ``sizes`` (``client_sampling="weighted"``)."""
    k = num_partitions
    m = max(1, int(round(fraction * k)))
    if m >= k:
        return list(range(k))
    rng = np.random.default_rng([seed, round_])
    if client_sampling == "weighted":
        weights = np.asarray(sizes, dtype=np.float64)
        chosen = rng.choice(k, size=m, replace=False, p=weights / weights.sum())
    else:
        chosen = rng.choice(k, size=m, replace=False)
    return sorted(int(c) for c in chosen)


def _details(failed: dict[int, str]) -> str:
    return "; ".join(f"client {p}: {why}" for p, why in sorted(failed.items()))


class FedlibStrategy(Strategy):
    """A fedlib method as a Flower strategy.

    Parameters
    ----------
    algorithm : Algorithm
        The server half runs here; every node runs the client half of an equal algorithm.
    model_fn : callable returning a fresh ``nn.Module``
        Built under ``seed`` (then ``algorithm.prepare_model``), as the nodes build it.
    seed : int, default 0
    fraction : float, default 1.0
        Share of clients sampled per round (:func:`sample_partitions`).
    client_sampling : {"uniform", "weighted"}, default "uniform"
    on_node_failure : {"fail", "skip"}, default "fail"
        What a round does when a sampled node fails, does not answer in time, or sends a
        non-finite or malformed update: stop the run (:class:`NodeFailure`), or aggregate the
        valid replies (a round without any still fails).
    evaluate : bool, default False
        Ask the nodes to score the global model on their test splits after every round.
    evaluate_clients : bool or None, default None
        With ``evaluate``, also score each client's own model (``spec_*``); ``None``: for
        personalized methods, as the simulator does.
    identify_timeout : float, default 120.0
        Seconds to wait for every partition's node to connect and answer the handshake.
    on_round : callable, optional
        Called as ``on_round(strategy, record)`` after each round is aggregated (progress
        files, logs).

    Attributes
    ----------
    state_ : GlobalState
    num_partitions_ : int
        ``K``, as the nodes declare it.
    partition_of_ : dict of int to int
        Flower node id -> client id.
    sizes_ : list of int
        ``n_k``, the clients' numbers of training examples.
    committed_ : dict of int to int
        Client id -> the last round whose reply was aggregated (what the node commits).
    history_ : list of dict
        One record per round: sampled and aggregated clients, failures, training loss.
    client_records_ : list of dict
        Per-client evaluation rows (``round``, ``client``, ``gen_*``, ``spec_*``).
    """

    _constraints = {
        "algorithm": InstanceOf(Algorithm, description="a fedlib Algorithm"),
        "seed": Interval(int, 0, None),
        "fraction": Interval(float, 0, 1, closed="right"),
        "client_sampling": Options(("uniform", "weighted")),
        "on_node_failure": Options(("fail", "skip")),
        "evaluate": InstanceOf(bool),
        "evaluate_clients": AnyOf(NONE, InstanceOf(bool)),
        "identify_timeout": Interval(float, 0, None, closed="neither"),
    }

    def __init__(
        self,
        algorithm: Algorithm,
        model_fn: Callable[[], nn.Module],
        *,
        seed: int = 0,
        fraction: float = 1.0,
        client_sampling: str = "uniform",
        on_node_failure: str = "fail",
        evaluate: bool = False,
        evaluate_clients: bool | None = None,
        identify_timeout: float = 120.0,
        on_round: Callable[[FedlibStrategy, dict[str, Any]], None] | None = None,
    ):
        validate_params(
            "FedlibStrategy",
            dict(algorithm=algorithm, seed=seed, fraction=fraction,
                 client_sampling=client_sampling, on_node_failure=on_node_failure,
                 evaluate=evaluate, evaluate_clients=evaluate_clients,
                 identify_timeout=identify_timeout),
            self._constraints,
        )
        if not callable(model_fn):
            raise TypeError(f"FedlibStrategy: 'model_fn' must be callable, got {model_fn!r}.")
        self.algorithm = algorithm
        self.seed = seed
        self.fraction = fraction
        self.client_sampling = client_sampling
        self.on_node_failure = on_node_failure
        self.evaluate = evaluate
        self.evaluate_clients = (
            algorithm.personalized if evaluate_clients is None else evaluate_clients
        )
        self.identify_timeout = identify_timeout
        self.on_round = on_round
        self.model_ = build_model(lambda: algorithm.prepare_model(model_fn()), seed)
        self.initial_weights_ = {
            k: v.detach().cpu().clone() for k, v in self.model_.state_dict().items()
        }
        self.state_: GlobalState = algorithm.init_global(self.model_)
        self.num_partitions_: int | None = None
        self._num_classes: int | None = None
        self.partition_of_: dict[int, int] = {}
        self.sizes_: list[int] = []
        self.test_sizes_: list[int] = []
        self.committed_: dict[int, int] = {}
        self.history_: list[dict[str, Any]] = []
        self.client_records_: list[dict[str, Any]] = []
        self._sent: dict[int, set[str]] = {}
        self._unreachable: dict[int, str] = {}

    # ------------------------------------------------------------------ public
    def initial_arrays(self) -> ArrayRecord:
        """The initial global weights, for ``Strategy.start``."""
        return to_array_record(self.state_.weights)

    def global_weights(self) -> dict[str, torch.Tensor]:
        """The full global weights (initial values under the keys never averaged), as
        ``Simulation._full_global_weights``."""
        weights = dict(self.initial_weights_)
        weights.update(self.state_.weights)
        return weights

    def global_model(self) -> nn.Module:
        """The global model with its evaluation weights (``Algorithm.eval_weights``)."""
        self.model_.load_state_dict(self.algorithm.eval_weights(self.global_weights(), self.state_))
        return self.model_

    def summary(self) -> None:
        logger.info(
            "FedlibStrategy: %s, seed %d, fraction %s (%s), on_node_failure=%s",
            self.algorithm.name, self.seed, self.fraction, self.client_sampling,
            self.on_node_failure,
        )

    # ------------------------------------------------------------------ identity
    def identify(self, grid: Grid, *, timeout: float | None = None) -> None:
        """Map Flower node ids to client ids: ask every node that has not answered yet for its
        ``partition-id``, until all ``K`` partitions are known (``K`` as the nodes declare it).

        Raises ``TimeoutError`` when partitions are still missing after ``timeout`` (default
        ``identify_timeout``), and ``ValueError`` when nodes disagree on ``K`` or on the number
        of classes. A node that claims a known partition takes it over (a restarted SuperNode
        comes back with a new id); a warning says so.
        """
        deadline = time.monotonic() + (self.identify_timeout if timeout is None else timeout)
        while True:
            unknown = sorted(set(grid.get_node_ids()) - set(self.partition_of_))
            if unknown:
                ask = [Message(RecordDict(), dst_node_id=n, message_type=IDENTIFY)
                       for n in unknown]
                left = max(deadline - time.monotonic(), 1.0)
                for reply in grid.send_and_receive(ask, timeout=left):
                    self._register(reply)
            known = set(self.partition_of_.values())
            if self.num_partitions_ is not None and known == set(range(self.num_partitions_)):
                break
            if time.monotonic() > deadline:
                expected = "?" if self.num_partitions_ is None else self.num_partitions_
                raise TimeoutError(
                    f"FedlibStrategy: after {self.identify_timeout:g} s only partitions "
                    f"{sorted(known)} of {expected} have answered; start a SuperNode for each "
                    "partition (node config 'partition-id', 'num-partitions')."
                )
            time.sleep(0.5)
        self.state_.extra["num_clients"] = self.num_partitions_  # the federation's size N

    def _register(self, reply: Message) -> None:
        node = reply.metadata.src_node_id
        if reply.has_error():
            logger.warning("node %d did not answer the handshake: %s", node, reply.error.reason)
            return
        fields = reply.content[FEDLIB]
        p, k = int(fields["partition-id"]), int(fields["num-partitions"])
        if self.num_partitions_ is None:
            self.num_partitions_ = k
            self.sizes_, self.test_sizes_ = [0] * k, [0] * k
            self._num_classes = int(fields["num-classes"])
        if k != self.num_partitions_ or int(fields["num-classes"]) != self._num_classes:
            raise ValueError(
                f"FedlibStrategy: node {node} declares {k} partitions and "
                f"{fields['num-classes']} classes; another declared {self.num_partitions_} "
                f"and {self._num_classes}."
            )
        if not 0 <= p < k:
            raise ValueError(f"FedlibStrategy: node {node} declares partition-id {p}, not in "
                             f"0..{k - 1}.")
        if p in self.partition_of_.values():
            previous = next(n for n, q in self.partition_of_.items() if q == p)
            logger.warning("partition %d moved from node %d to node %d", p, previous, node)
            del self.partition_of_[previous]
        self.partition_of_[node] = p
        self.sizes_[p] = int(fields["num-examples"])
        self.test_sizes_[p] = int(fields["num-test-examples"])

    def node_of(self, partition: int) -> int:
        return next(n for n, p in self.partition_of_.items() if p == partition)

    # ------------------------------------------------------------------ training
    def sample(self, round_: int) -> list[int]:
        """The clients that train in ``round_`` (sampled, with training data)."""
        sampled = sample_partitions(
            round_, num_partitions=self.num_partitions_, fraction=self.fraction, seed=self.seed,
            client_sampling=self.client_sampling, sizes=self.sizes_,
        )
        return [p for p in sampled if self.sizes_[p] > 0]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One train message per sampled client; ``arrays`` is ignored (the global state lives
        in the strategy)."""
        round_ = server_round - 1
        if self.state_.round != round_:
            raise RuntimeError(f"FedlibStrategy: asked for round {server_round}, but the global "
                               f"state has finished {self.state_.round} rounds.")
        self.identify(grid)
        online = set(grid.get_node_ids())
        keep_post_local = self.evaluate and self.evaluate_clients and (
            self.algorithm.spec_model == "post_local")
        self._sent, self._unreachable, messages = {}, {}, []
        for p in self.sample(round_):
            node = self.node_of(p)
            if node not in online:
                self._unreachable[p] = f"node {node} is not connected"
                continue
            message = self.algorithm.message_for(self.state_, p)
            content = message_content(message, **{
                "partition-id": p, "commit-round": self.committed_.get(p, -1),
                "keep-post-local": bool(keep_post_local)})
            messages.append(Message(content, dst_node_id=node, message_type=MessageType.TRAIN,
                                    group_id=str(server_round)))
            self._sent[p] = set(message.arrays)
        if self._unreachable and (self.on_node_failure == "fail" or not messages):
            # the round cannot complete as configured: stop before anyone trains
            raise self._failure(server_round, self._unreachable, any_valid=bool(messages))
        return messages

    def _failure(self, server_round: int, failed: dict[int, str], *, any_valid: bool):
        return NodeFailure(
            f"FedlibStrategy: round {server_round} failed ({_details(failed)}); the global "
            f"model was left as after round {server_round - 1}"
            + (" (on_node_failure='fail')." if any_valid else ": no valid reply.")
        )

    def _check_reply(self, p: int, reply: ClientReply, content: RecordDict) -> None:
        if int(content[FEDLIB]["round"]) != self.state_.round:
            raise ValueError(f"reply of round {int(content[FEDLIB]['round']) + 1}")
        if set(reply.arrays) != self._sent[p]:
            raise ValueError(f"its arrays have keys {sorted(set(reply.arrays) ^ self._sent[p])} "
                             "that differ from what was sent")
        weights = self.state_.weights
        wrong = [k for k, v in reply.arrays.items() if k in weights and v.shape != weights[k].shape]
        if wrong:
            raise ValueError(f"its arrays have wrong shapes under {wrong[:3]}")
        check_finite(reply)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Convert the replies, sort them by client id, and call ``algorithm.aggregate``."""
        start = self.state_
        round_ = start.round
        good: dict[int, ClientReply] = {}
        failed: dict[int, str] = dict(self._unreachable)
        for message in replies:
            p = self.partition_of_.get(message.metadata.src_node_id)
            if p is None or p not in self._sent:
                logger.warning("round %d: ignored a reply from node %d, which was not asked",
                               server_round, message.metadata.src_node_id)
                continue
            if message.has_error():
                failed[p] = f"error on the node: {message.error.reason}"
                continue
            try:
                reply = client_reply(message.content, p)
                self._check_reply(p, reply, message.content)
            except Exception as exc:  # noqa: BLE001 - any bad reply is handled by policy
                failed[p] = f"invalid reply: {exc}"
                continue
            good[p] = reply
        for p in self._sent:
            if p not in good and p not in failed:
                failed[p] = "no reply before the round's timeout"
        if failed:
            if self.on_node_failure == "fail" or not good:
                raise self._failure(server_round, failed, any_valid=bool(good))
            logger.warning("round %d: skipped %s", server_round, _details(failed))
        ordered = [good[p] for p in sorted(good)]
        self.state_ = aggregate_round(self.algorithm, start, ordered, seed=self.seed)
        for p in good:
            self.committed_[p] = round_
        sizes = [r.num_examples for r in ordered]
        loss = sum(r.metrics["train_loss"] * n for r, n in zip(ordered, sizes, strict=True))
        record = {
            "round": server_round,
            "clients": sorted(good),
            "failed": sorted(failed),
            "train_loss": float(loss / max(sum(sizes), 1)),
        }
        self.history_.append(record)
        if self.on_round is not None:
            self.on_round(self, record)
        metrics = MetricRecord({"train_loss": record["train_loss"], "num-clients": len(good),
                                "failed-clients": len(failed)})
        return to_array_record(self.state_.weights), metrics

    # ------------------------------------------------------------------ evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """With ``evaluate``: one message per client with a test split, holding the global
        evaluation weights (and, for ``spec_*``, the next round's message)."""
        if not self.evaluate:
            return []
        online = set(grid.get_node_ids())
        eval_weights = to_array_record(
            self.algorithm.eval_weights(self.global_weights(), self.state_))
        messages = []
        for p in range(self.num_partitions_):
            node = self.node_of(p) if p in self.partition_of_.values() else None
            if node is None or node not in online or self.test_sizes_[p] == 0:
                continue
            bookkeeping = {"partition-id": p, "commit-round": self.committed_.get(p, -1),
                           "spec": bool(self.evaluate_clients)}
            if self.evaluate_clients:
                content = message_content(self.algorithm.message_for(self.state_, p),
                                          **bookkeeping)
            else:
                content = RecordDict({FEDLIB: ConfigRecord(bookkeeping)})
            content[EVAL_ARRAYS] = eval_weights
            messages.append(Message(content, dst_node_id=node,
                                    message_type=MessageType.EVALUATE,
                                    group_id=str(server_round)))
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Per-client rows in ``client_records_``; returns the unweighted means over clients
        (``gen_client_mean_*``, ``spec_*``)."""
        rows = []
        for message in replies:
            p = self.partition_of_.get(message.metadata.src_node_id)
            if p is None or message.has_error():
                logger.warning("round %d: an evaluation reply was lost or failed", server_round)
                continue
            metrics = dict(message.content["metrics"])
            metrics.pop(NUM_EXAMPLES, None)
            rows.append({"round": server_round, "client": p, **metrics})
        rows.sort(key=lambda row: row["client"])
        self.client_records_.extend(rows)
        if not rows:
            return None
        names = sorted({k for row in rows for k in row} - {"round", "client"})
        means = {}
        for name in names:
            values = [row[name] for row in rows if name in row]
            key = name.replace("gen_", "gen_client_mean_") if name.startswith("gen_") else name
            means[key] = float(np.mean(values))
        return MetricRecord(means)
