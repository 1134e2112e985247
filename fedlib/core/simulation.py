"""The in-process simulator: drives an :class:`~fedlib.core.algorithm.Algorithm`'s server and
client halves over a :class:`~fedlib.data.FederatedDataset`, round by round, seeded."""

from __future__ import annotations

import copy as copy_module
import dataclasses
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fedlib._validation import NONE, AnyOf, InstanceOf, Interval, Options, validate_params
from fedlib.core.aggregation import StreamedReplies, StreamingAverage, weighted_average
from fedlib.core.algorithm import Algorithm, build_model
from fedlib.core.checkpoint import load_checkpoint, save_checkpoint
from fedlib.core.evaluate import BASIC_METRICS, evaluate, predict, shared_test
from fedlib.core.history import History
from fedlib.core.protocol import ClientReply, ClientState, GlobalState
from fedlib.core.rounds import (
    aggregate_round,
    check_finite,
    derive_seed,
    derive_seeds,
    finetune_for_evaluation,
    local_round,
    seed_global_generators,
)
from fedlib.core.storage import DiskClientStates, PackedClientStates, PackedState, RecordTable
from fedlib.data.base import FederatedDataset
from fedlib.utils import device as default_device

__all__ = ["ClientError", "Simulation", "check_finite", "derive_seed", "predict"]

logger = logging.getLogger("fedlib")

CHECKPOINT_FORMAT = 2


BOOKKEEPING_BATCH = 32
"""How many clients train before their replies and states are filed together."""


def _batches(items, size: int = BOOKKEEPING_BATCH):
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class ClientError(RuntimeError):
    """A client failed during local training (the message names the client and the round)."""

    def __init__(self, client_id: int, round_: int, cause: BaseException | str):
        self.client_id, self.round = client_id, round_
        super().__init__(f"client {client_id} failed in round {round_ + 1}: {cause}")


class Simulation:
    """Run a federated algorithm in one process.

    Parameters
    ----------
    algorithm : Algorithm
    model_fn : callable returning a fresh ``nn.Module``
        Called under ``seed``, so the initial weights depend on the seed only.
    dataset : FederatedDataset
    num_rounds : int
    fraction : float, default 1.0
        Share of clients sampled per round, ``m = max(1, round(fraction * K))``, without
        replacement from a generator seeded by ``(seed, round)``.
    client_sampling : {"uniform", "weighted"}, default "uniform"
        Sample clients uniformly, or with probability proportional to ``n_k``.
    seed : int, default 0
        Every random choice derives from ``(seed, round, client)``, so a resumed run and an
        uninterrupted one are identical.
    device : torch.device, optional
        Default :func:`fedlib.device` (CUDA when present).
    eval_every : int or None, default 1
        Evaluate every ``eval_every`` rounds and after the last; ``None``: only after the last.
    evaluate_clients : bool or None, default None
        Also evaluate each client's own model (``Algorithm.spec_weights``, then
        ``Algorithm.finetune_for_eval``) on its own test split at every evaluation (columns
        ``spec_accuracy``/``spec_balanced_accuracy``). ``None``: only for personalized methods.
    round_order : {"train_first", "aggregate_first"}, default "train_first"
        "train_first": every client starts from one server initialisation. "aggregate_first"
        (the FedNPR/FCA code): each client initialises its own model (seeded by
        ``(seed, client)``) and the first global model is their ``n_k``-weighted average;
        later rounds are the same in both orders.
    progress : bool, default True
        Show a tqdm bar over rounds.
    on_client_error : {"raise", "skip"}, default "raise"
        "raise" stops the run with :class:`ClientError` (the round is aborted: neither the
        global model nor any client's state changes); "skip" drops that client from the
        round's aggregation with a warning (its state is left as before the round).
        Non-finite updates count as failures.
    checkpoint_dir : path, optional
        Save a checkpoint there (``checkpoint.pt``, replaced each time) every
        ``checkpoint_every`` rounds; ``run(resume=True)`` continues from the last one, and the
        resumed run equals the uninterrupted one bit for bit (weights, client states, history).
    checkpoint_every : int >= 0, optional
        ``N``: a checkpoint after every ``N``-th round and after the last round; ``0``: none.
        Default: 1 with a ``checkpoint_dir``, 0 without; a positive value needs a
        ``checkpoint_dir``. Not part of a run's settings: a run may resume with another value.
    vectorize : bool, default False
        Train each round's sampled clients together (:mod:`fedlib.core.vectorized`:
        ``torch.func.vmap`` over the clients' stacked parameters, with a functional optimizer
        step), for many small clients. Results equal the sequential path up to float rounding
        (see that module for the tolerance); a method, model or option it cannot train exactly
        is refused with a message when the run starts.
    client_state_dir : path, optional
        Keep each client's persistent state in a file there (one per client,
        :class:`~fedlib.core.storage.DiskClientStates`) instead of in memory: a state is read
        when its client trains or is evaluated, and a round's new states are written as they
        come and replace the stored ones when the round commits. In memory
        (:class:`~fedlib.core.storage.PackedClientStates`), each state is packed into one
        buffer per dtype, so it costs its tensors' bytes (plus alignment to 64 bytes) rather
        than an object and an allocation per tensor; a client's new state and its previous one
        coexist until the round commits (an aborted round leaves every state as it was), so a
        round's peak holds the sampled clients' states twice.

    Clients without training data never train (a warning names them); they are still
    evaluated on their test split.

    What is kept per client: the method's own state (``ClientState``) and nothing else. The
    post-local model of ``spec_model="post_local"`` (FedAvg's default) is stored only when the
    run evaluates clients (``evaluate_clients``); otherwise :meth:`client_model` rebuilds it
    when asked (after the run, e.g. by :func:`fedlib.evaluation.specialization`) by replaying
    the client's last local round, seeded as it was, from the global state that round
    started with and the client's state before it. The simulator keeps those (one global
    state per round that is still some client's last round, and the small state of each
    client), so the rebuilt model is the one the client trained, bit for bit, at the price of
    one more local round per evaluated client. Rounds stream the clients' arrays into a
    float64 running sum (:class:`~fedlib.core.aggregation.StreamingAverage`, the same bits as
    :func:`~fedlib.core.aggregation.weighted_average`) unless the method overrides
    ``aggregate`` or ``client_weights``, and the per-client history rows are typed columns
    (:class:`~fedlib.core.storage.RecordTable`). The running sum also tests each client's
    arrays for NaN and infinity as it converts them (a client that fails the test is handled
    by ``on_client_error``, as any failed client), and the clients' replies and new states are
    filed in batches of :data:`BOOKKEEPING_BATCH` after they trained, in client order: the
    same results as filing each at once, with that code's memory still in the processor's
    caches from one client to the next.
    """

    _constraints = {
        "num_rounds": Interval(int, 1, None),
        "fraction": Interval(float, 0, 1, closed="right"),
        "client_sampling": Options(("uniform", "weighted")),
        "seed": Interval(int, 0, None),
        "eval_every": AnyOf(NONE, Interval(int, 1, None)),
        "evaluate_clients": AnyOf(NONE, InstanceOf(bool)),
        "eval_batch_size": Interval(int, 1, None),
        "round_order": Options(("train_first", "aggregate_first")),
        "progress": InstanceOf(bool),
        "on_client_error": Options(("raise", "skip")),
        "checkpoint_every": AnyOf(NONE, Interval(int, 0, None)),
        "vectorize": InstanceOf(bool),
        "algorithm": InstanceOf(Algorithm, description="a fedlib Algorithm"),
        "dataset": InstanceOf(FederatedDataset, description="a FederatedDataset"),
    }

    def __init__(
        self,
        algorithm: Algorithm,
        model_fn: Callable[[], nn.Module],
        dataset: FederatedDataset,
        *,
        num_rounds: int,
        fraction: float = 1.0,
        client_sampling: str = "uniform",
        seed: int = 0,
        device: torch.device | str | None = None,
        eval_every: int | None = 1,
        evaluate_clients: bool | None = None,
        eval_batch_size: int = 1024,
        round_order: str = "train_first",
        progress: bool = True,
        on_client_error: str = "raise",
        checkpoint_dir: str | None = None,
        checkpoint_every: int | None = None,
        vectorize: bool = False,
        client_state_dir: str | None = None,
    ):
        validate_params(
            "Simulation",
            dict(
                algorithm=algorithm,
                dataset=dataset,
                num_rounds=num_rounds,
                fraction=fraction,
                client_sampling=client_sampling,
                seed=seed,
                eval_every=eval_every,
                evaluate_clients=evaluate_clients,
                eval_batch_size=eval_batch_size,
                round_order=round_order,
                progress=progress,
                on_client_error=on_client_error,
                checkpoint_every=checkpoint_every,
                vectorize=vectorize,
            ),
            self._constraints,
        )
        if not callable(model_fn):
            raise TypeError(f"Simulation: 'model_fn' must be callable, got {model_fn!r}.")
        if checkpoint_every is None:
            checkpoint_every = 0 if checkpoint_dir is None else 1
        elif checkpoint_every > 0 and checkpoint_dir is None:
            raise ValueError(
                f"Simulation: 'checkpoint_every'={checkpoint_every} needs a 'checkpoint_dir' "
                "to write the checkpoints to (or 0: no checkpoints)."
            )
        self.algorithm = algorithm
        self.model_fn = model_fn
        self.dataset = dataset
        self.num_rounds = num_rounds
        self.fraction = fraction
        self.client_sampling = client_sampling
        self.seed = seed
        self.device = torch.device(device) if device is not None else default_device()
        self.eval_every = eval_every
        self.evaluate_clients = (
            algorithm.personalized if evaluate_clients is None else evaluate_clients
        )
        self.eval_batch_size = eval_batch_size
        self.round_order = round_order
        self.progress = progress
        self.on_client_error = on_client_error
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.vectorize = vectorize
        self.client_state_dir = client_state_dir

        self._check_clients()
        self.model_ = self._build(seed).to(self.device)
        self.initial_weights_ = {
            k: v.detach().cpu().clone() for k, v in self.model_.state_dict().items()
        }
        self.state_: GlobalState = algorithm.init_global(self.model_)
        self.state_.extra["num_clients"] = dataset.num_clients  # the federation's size N
        if round_order == "aggregate_first":
            self._average_client_inits()
        self.client_states_: PackedClientStates | DiskClientStates = (
            PackedClientStates(dataset.client_ids())
            if client_state_dir is None
            else DiskClientStates(client_state_dir, dataset.client_ids())
        )
        self._finetuned_: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}
        # post-local models rebuilt on demand: client -> (round, state before it, algorithm)
        # and the global state each such round started with
        self._replay: dict[int, tuple[int, PackedState, Algorithm]] = {}
        self._round_starts: dict[int, GlobalState] = {}
        self._round_seeds: dict[tuple[int, int], int] = {}
        self.history_ = History(config=self.describe(), client_records=RecordTable())
        if vectorize:
            from fedlib.core.vectorized import _Vectorizer

            self._vectorizer = _Vectorizer(self)  # refuses what it cannot train exactly

    # ------------------------------------------------------------------ public
    def describe(self) -> dict[str, Any]:
        """The run's settings and data fingerprint (what a checkpoint must match)."""
        return {
            "method": self.algorithm.name,
            "method_params": self.algorithm.params(),
            "dataset": self.dataset.name,
            "dataset_fingerprint": self.dataset.fingerprint(),
            "num_clients": self.dataset.num_clients,
            "fraction": self.fraction,
            "client_sampling": self.client_sampling,
            "seed": self.seed,
            "eval_every": self.eval_every,
            "evaluate_clients": self.evaluate_clients,
            "round_order": self.round_order,
            # only when set, so checkpoints of sequential runs stay valid
            **({"vectorize": True} if self.vectorize else {}),
        }

    def sample_clients(self, round_: int) -> list[int]:
        """The sorted ids of the clients that train in ``round_``."""
        k = self.dataset.num_clients
        m = max(1, int(round(self.fraction * k)))
        if m >= k:
            return list(range(k))
        rng = np.random.default_rng([self.seed, round_])
        if self.client_sampling == "weighted":
            sizes = np.array([len(self.dataset.train[c]) for c in range(k)], dtype=np.float64)
            chosen = rng.choice(k, size=m, replace=False, p=sizes / sizes.sum())
        else:
            chosen = rng.choice(k, size=m, replace=False)
        return sorted(int(c) for c in chosen)

    def run(self, *, resume: bool = False) -> History:
        """Play the remaining rounds and return the history."""
        if resume:
            self._restore()
        start = self.state_.round
        bar = tqdm(
            range(start, self.num_rounds),
            desc=self.algorithm.name,
            disable=not self.progress,
            initial=start,
            total=self.num_rounds,
        )
        with torch.random.fork_rng(devices=[]):
            for round_ in bar:
                record = self._play_round(round_)
                if self.progress:
                    shown = {"loss": f"{record['train_loss']:.3f}"}
                    if "gen_balanced_accuracy" in record:
                        shown["bacc"] = f"{record['gen_balanced_accuracy']:.3f}"
                    bar.set_postfix(shown)
                if self._checkpoint_due(round_ + 1):
                    save_checkpoint(self.checkpoint_dir, self._checkpoint_payload())
        bar.close()
        return self.history_

    def global_model(self, *, copy: bool = True) -> nn.Module:
        """The global model with its evaluation weights (``Algorithm.eval_weights``: the
        global weights, or CReFF's re-trained classifier).

        A new module the caller may keep; ``copy=False`` returns the simulator's scratch
        module instead (cheaper, but the next call overwrites it).
        """
        weights = self.algorithm.eval_weights(self._full_global_weights(), self.state_)
        self.model_.load_state_dict(weights)
        return copy_module.deepcopy(self.model_) if copy else self.model_

    def client_model(self, client_id: int, *, copy: bool = True) -> nn.Module:
        """Client ``client_id``'s model for specialization.

        ``Algorithm.spec_weights``, then ``Algorithm.finetune_for_eval`` on the client's
        training data (FedBABU), seeded by ``(seed, rounds done, client)``; fine-tuned weights
        are used for evaluation only (and reused within a round). A new module unless
        ``copy=False`` (see :meth:`global_model`).
        """
        self._load_client_model(client_id)
        return copy_module.deepcopy(self.model_) if copy else self.model_

    def post_local_weights(self, client_id: int) -> dict[str, torch.Tensor] | None:
        """Client ``client_id``'s model after its last local training: stored in its state when
        the run evaluates clients, otherwise rebuilt by replaying that round (see the class
        notes); ``None`` if it has never trained."""
        stored = self.client_states_[client_id].post_local
        return stored if stored is not None else self._post_local(client_id)

    def local_updates(
        self, client_ids: list[int] | None = None, *, algorithm: Algorithm | None = None
    ) -> list[ClientReply]:
        """The replies the next round's local training would produce, without applying them.

        Nothing changes: neither the global state nor any client's state. The clients train
        exactly as in the next round (same seeds), so ``algorithm.aggregate`` of these replies
        is that round's new global state. ``algorithm`` swaps in another method (e.g. more
        local epochs) to compare local work from the same starting point. The clients train
        one by one (with ``vectorize=True`` too, whose round equals this within its
        tolerance).
        """
        ids = self.sample_clients(self.state_.round) if client_ids is None else client_ids
        with torch.random.fork_rng(devices=[]):
            return [
                self._local_work(self.state_.round, k, algorithm or self.algorithm)[0]
                for k in ids
            ]

    # ------------------------------------------------------------------ set-up
    def _checkpoint_due(self, done: int) -> bool:
        """Whether a checkpoint follows the ``done``-th round: every ``checkpoint_every``
        rounds, and after the last."""
        every = self.checkpoint_every
        return every > 0 and (done % every == 0 or done == self.num_rounds)

    def _build(self, seed: int) -> nn.Module:
        return build_model(lambda: self.algorithm.prepare_model(self.model_fn()), seed)

    def _check_clients(self) -> None:
        empty = [k for k in self.dataset.client_ids() if len(self.dataset.train[k]) == 0]
        names = [self.dataset.client_names[k] for k in empty]
        if len(empty) == self.dataset.num_clients:
            raise ValueError(
                f"Simulation: every client of {self.dataset.name!r} has an empty training "
                f"split ({', '.join(names)}); there is nothing to train on."
            )
        if empty:
            warnings.warn(
                f"Simulation: clients {empty} ({', '.join(names)}) have no training data; they "
                "never train and are only evaluated.",
                stacklevel=3,
            )
        if all(len(self.dataset.test[k]) == 0 for k in self.dataset.client_ids()):
            raise ValueError(
                f"Simulation: every client of {self.dataset.name!r} has an empty test split; "
                "nothing could be evaluated."
            )
        self._trainable = set(self.dataset.client_ids()) - set(empty)

    def _average_client_inits(self) -> None:
        keys = self.state_.extra["shared_keys"]
        inits, sizes = [], []
        for k in self.dataset.client_ids():
            model = self._build(derive_seed(self.seed, k))
            state = model.state_dict()
            inits.append({key: state[key].detach().cpu() for key in keys})
            sizes.append(max(len(self.dataset.train[k]), 1))
        if keys:
            self.state_.weights.update(weighted_average(inits, sizes))

    # ------------------------------------------------------------------ one round
    def _play_round(self, round_: int) -> dict[str, Any]:
        tic = time.perf_counter()
        selected = [k for k in self.sample_clients(round_) if k in self._trainable]
        self._round_seeds = {
            (round_, k): s for k, s in zip(
                selected, derive_seeds((self.seed, round_), selected), strict=True)
        }
        stream = self._aggregation_stream(selected)
        replies: list[ClientReply] = []
        # client -> its state before the round, packed, when kept for a replay (else None);
        # the new states are staged in the store as they come
        pending: dict[int, PackedState | None] = {}
        failed: list[int] = []
        replay = self._replays_post_local()
        start = self.state_
        try:
            for batch in _batches(self._train_clients(round_, selected, stream)):
                # the bookkeeping of a batch of clients runs together, after they trained:
                # its code and objects are then still in the processor's caches from one
                # client to the next, rather than pushed out by each client's training
                for client_id, outcome, streamed in batch:
                    if outcome is not None and stream is not None and not streamed:
                        outcome = self._add_to_stream(round_, client_id, outcome, stream)
                    if outcome is None:
                        failed.append(client_id)
                        continue
                    reply, new_state, old_state = outcome
                    if stream is not None:
                        reply = dataclasses.replace(reply, arrays={})
                    replies.append(reply)
                    if replay:  # the stored state is still the one the client started from
                        pending[client_id] = (
                            self.client_states_.packed(client_id)
                            if isinstance(self.client_states_, PackedClientStates)
                            else PackedState.pack(old_state)
                        )
                    else:
                        pending[client_id] = None
                    self.client_states_.stage(client_id, new_state)
            if not replies:
                raise RuntimeError(
                    f"Simulation: every sampled client failed in round {round_ + 1} "
                    f"(clients {failed}); the global model was left unchanged."
                )
            if stream is not None:
                replies = StreamedReplies(replies, stream.result())
            new_global = aggregate_round(self.algorithm, start, replies, seed=self.seed)
        except BaseException:
            self.client_states_.discard_staged()
            raise
        self.state_ = new_global
        self._commit(round_, start, pending, replay)
        record: dict[str, Any] = {
            "round": round_ + 1,
            "num_clients": len(replies),
            "failed_clients": len(failed),
            "train_loss": _weighted_mean(
                [r.metrics["train_loss"] for r in replies], [r.num_examples for r in replies]
            ),
        }
        client_rows = {
            r.client_id: {
                "round": round_ + 1,
                "client": r.client_id,
                "num_examples": r.num_examples,
                **{k: float(v) for k, v in r.metrics.items()},
            }
            for r in replies
        }
        del replies, pending
        done = round_ + 1
        if done == self.num_rounds or (self.eval_every is not None and done % self.eval_every == 0):
            self._evaluate(record, client_rows)
        record["seconds"] = time.perf_counter() - tic
        self.history_.round_records.append(record)
        self.history_.client_records.extend(client_rows[c] for c in sorted(client_rows))
        return record

    def _aggregation_stream(self, selected: list[int]) -> StreamingAverage | None:
        """A running average of this round's arrays, or ``None`` when the method needs every
        reply's arrays (it overrides ``aggregate`` or ``client_weights``)."""
        kind = type(self.algorithm)
        if (
            not selected
            or kind.aggregate is not Algorithm.aggregate
            or kind.client_weights is not Algorithm.client_weights
        ):
            return None
        announced = [ClientReply(k, {}, len(self.dataset.train[k])) for k in selected]
        weights = self.algorithm.client_weights(announced)
        return StreamingAverage(dict(zip(selected, weights, strict=True)))

    def _keeps_post_local(self) -> bool:
        """Whether trained clients store their post-local model (read by client evaluation)."""
        return self.algorithm.spec_model == "post_local" and bool(self.evaluate_clients)

    def _replays_post_local(self) -> bool:
        """Whether post-local models are rebuilt on demand (see the class notes)."""
        return self.algorithm.spec_model == "post_local" and not self._keeps_post_local()

    def _commit(
        self,
        round_: int,
        start: GlobalState,
        pending: dict[int, PackedState | None],
        replay: bool,
    ) -> None:
        """Store the round's new client states and, where post-local models are rebuilt on
        demand, what a replay of each client's round needs."""
        self.client_states_.commit_staged()
        for client_id, old_state in pending.items():
            if replay:
                self._replay[client_id] = (round_, old_state, self.algorithm)
            else:
                self._replay.pop(client_id, None)
        if replay and pending:
            self._round_starts[round_] = start
        used = {r for r, _, _ in self._replay.values()}
        for r in [r for r in self._round_starts if r not in used]:
            del self._round_starts[r]

    def _client_seed(self, round_: int, client_id: int) -> int:
        """The seed of client ``client_id``'s local work in ``round_``,
        ``derive_seed(seed, round_, client_id)`` (the round's seeds are derived together)."""
        cached = self._round_seeds.get((round_, client_id))
        return derive_seed(self.seed, round_, client_id) if cached is None else cached

    @staticmethod
    def _check_finite(reply: ClientReply, *, arrays_finite: bool | None = None) -> None:
        check_finite(reply, arrays_finite=arrays_finite)

    def _seed_global(self, seed: int) -> None:
        """:func:`~fedlib.core.rounds.seed_global_generators` for the training device."""
        seed_global_generators(seed, self.device)

    def _local_work(
        self,
        round_: int,
        client_id: int,
        algorithm: Algorithm,
        *,
        start: GlobalState | None = None,
        state: ClientState | None = None,
        keep_post_local: bool | None = None,
        check_arrays: bool = True,
    ) -> tuple[ClientReply, ClientState]:
        """One client's seeded local round (:func:`~fedlib.core.rounds.local_round`, from
        ``start`` and ``state``, by default the current global state and the client's stored
        state); raises if the update is not finite (the arrays unless ``check_arrays`` is
        false: the caller tests them)."""
        return local_round(
            algorithm,
            self.model_,
            algorithm.message_for(self.state_ if start is None else start, client_id),
            self.client_states_[client_id] if state is None else state,
            self.dataset.train[client_id],
            seed=self.seed,
            client_id=client_id,
            num_classes=self.dataset.num_classes,
            initial_weights=self.initial_weights_,
            device=self.device,
            keep_post_local=keep_post_local,
            client_seed=self._client_seed(round_, client_id),
            check_arrays=check_arrays,
        )

    def _train_clients(self, round_: int, selected: list[int], stream: StreamingAverage | None):
        """``(client, (reply, new state, old state), streamed)`` per sampled client, in order;
        ``None`` instead of the triple for a client that failed and is skipped; ``streamed``
        when the reply's arrays were already added to ``stream`` (the vectorized path adds a
        chunk of clients at once)."""
        if self.vectorize:
            from fedlib.core.vectorized import train_round

            yield from train_round(self, round_, selected, stream)
            return
        keep = self._keeps_post_local()
        for client_id in selected:
            yield client_id, self._guarded(round_, client_id, keep, stream is not None), False

    def _guarded(self, round_: int, client_id: int, keep_post_local: bool, streamed: bool):
        """One client's local round, or ``None`` for a client that failed and is skipped;
        ``streamed``: its arrays go to the round's average, which tests them for NaN and
        infinity (:meth:`_add_to_stream`), so the local round tests only the loss."""
        try:
            old = self.client_states_[client_id]
            reply, new = self._local_work(
                round_, client_id, self.algorithm, state=old, keep_post_local=keep_post_local,
                check_arrays=not streamed,
            )
            return reply, new, old
        except Exception as exc:  # noqa: BLE001 - any client failure is handled by policy
            self._client_failed(round_, client_id, exc)
            return None

    def _add_to_stream(self, round_: int, client_id: int, outcome, stream: StreamingAverage):
        """Add a client's arrays to the round's average; ``None`` (the client failed, and is
        skipped) when they hold a NaN or an infinity."""
        try:
            stream.add(client_id, outcome[0].arrays, check_finite=True)
            return outcome
        except FloatingPointError as exc:
            self._client_failed(round_, client_id, exc)
            return None

    def _client_failed(self, round_: int, client_id: int, exc: BaseException) -> None:
        error = ClientError(client_id, round_, exc)
        if self.on_client_error == "raise":
            raise error from exc
        warnings.warn(f"{error}; skipped in this round's aggregation.", stacklevel=3)
        logger.warning("%s; skipped in this round's aggregation.", error)

    # ------------------------------------------------------------------ evaluation
    def _post_local(self, client_id: int) -> dict[str, torch.Tensor] | None:
        """Client ``client_id``'s post-local model, rebuilt by replaying its last local round
        (``None`` when it has never trained)."""
        if client_id not in self._replay:
            return None
        round_, before, algorithm = self._replay[client_id]
        with torch.random.fork_rng(devices=[]):
            _, state = self._local_work(
                round_, client_id, algorithm, start=self._round_starts[round_],
                state=before.unpack(), keep_post_local=True,
            )
        return state.post_local

    def _load_client_model(self, client_id: int) -> None:
        """Load client ``client_id``'s specialization weights into the scratch model."""
        cached = self._finetuned_.get(client_id)
        if cached is not None and cached[0] == self.state_.round:
            self.model_.load_state_dict(cached[1])
            return
        state = self.client_states_[client_id]
        if self.algorithm.spec_model == "post_local" and state.post_local is None:
            rebuilt = self._post_local(client_id)
            if rebuilt is not None:
                state = dataclasses.replace(state, post_local=rebuilt)
        weights = self.algorithm.spec_weights(self._full_global_weights(), state)
        self.model_.load_state_dict(weights)
        if type(self.algorithm).finetune_for_eval is Algorithm.finetune_for_eval:
            return
        data = self.dataset.train[client_id]
        if len(data) == 0:
            return
        finetune_for_evaluation(
            self.algorithm, self.model_, self.algorithm.message_for(self.state_, client_id),
            state, data, seed=self.seed, client_id=client_id,
            num_classes=self.dataset.num_classes, device=self.device,
        )
        # fine-tuning is deterministic per (round, client): keep the result for the other
        # evaluations of this round (the per-round history, then fedlib.evaluation)
        tuned = {k: v.detach().clone() for k, v in self.model_.state_dict().items()}
        self._finetuned_[client_id] = (self.state_.round, tuned)

    def _evaluate(self, record: dict[str, Any], client_rows: dict[int, dict[str, Any]]) -> None:
        """Basic metrics of the global model (pooled test set, and each client's split) and,
        with ``evaluate_clients``, of each client's own model on its split."""
        data = self.dataset
        options = dict(
            num_classes=data.num_classes, device=self.device, batch_size=self.eval_batch_size,
            metrics="basic",
        )
        model = self.global_model(copy=False)
        for name, value in evaluate(model, data.pooled_test(), **options).items():
            record[f"gen_{name}"] = value
        shared = shared_test(data)
        per_client_bacc, spec = [], {m: [] for m in BASIC_METRICS}
        if not shared:
            for k in data.client_ids():
                scores = evaluate(model, data.test[k], **options)
                if not scores:
                    continue
                row = client_rows.setdefault(k, {"round": record["round"], "client": k})
                row.update({f"gen_{m}": v for m, v in scores.items()})
                per_client_bacc.append(scores["balanced_accuracy"])
            record["gen_client_mean_balanced_accuracy"] = float(np.mean(per_client_bacc))
        if self.evaluate_clients:
            for k in data.client_ids():
                if len(data.test[k]) == 0:
                    continue
                scores = evaluate(self.client_model(k, copy=False), data.test[k], **options)
                row = client_rows.setdefault(k, {"round": record["round"], "client": k})
                for m, v in scores.items():
                    row[f"spec_{m}"] = v
                    spec[m].append(v)
            for m, values in spec.items():
                record[f"spec_{m}"] = float(np.mean(values))

    # ------------------------------------------------------------------ checkpoints
    def _full_global_weights(self) -> dict[str, torch.Tensor]:
        weights = dict(self.initial_weights_)
        weights.update(self.state_.weights)
        return weights

    def _checkpoint_payload(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.describe(),
            "round": self.state_.round,
            "weights": self.state_.weights,
            "extra": self.state_.extra,
            "client_states": {str(k): v.to_payload() for k, v in self.client_states_.items()},
            "round_records": self.history_.round_records,
            "client_records": list(self.history_.client_records),
            "replay": {
                "clients": {
                    str(k): {"round": r, "state": before.unpack().to_payload()}
                    for k, (r, before, _) in self._replay.items()
                },
                "rounds": {
                    str(r): {"weights": g.weights, "round": g.round, "extra": g.extra}
                    for r, g in self._round_starts.items()
                },
            },
        }

    def _restore(self) -> None:
        if self.checkpoint_dir is None:
            raise ValueError("Simulation.run: 'resume=True' needs a 'checkpoint_dir'.")
        payload = load_checkpoint(self.checkpoint_dir)
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"Simulation.run: checkpoint format {payload.get('format')!r} is not "
                f"{CHECKPOINT_FORMAT} (it was written by another version of fedlib)."
            )
        expected = _jsonable(self.describe())
        found = _jsonable(payload["config"])
        if found != expected:
            details = "; ".join(
                f"{k}: checkpoint {x!r}, this run {y!r}"
                for k, x, y in _differences(found, expected)
            )
            raise ValueError(
                "Simulation.run: the checkpoint was written by a run with other settings or "
                f"data; differences: {details}."
            )
        if payload["round"] > self.num_rounds:
            raise ValueError(
                f"Simulation.run: the checkpoint is at round {payload['round']}, beyond "
                f"'num_rounds'={self.num_rounds}."
            )
        own = self.model_.state_dict()
        wrong = [
            f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
            for k, v in payload["weights"].items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        if wrong or set(payload["weights"]) - set(own):
            unknown = sorted(set(payload["weights"]) - set(own))
            raise ValueError(
                "Simulation.run: the checkpoint's model does not match this run's model "
                f"(shapes checkpoint vs model: {wrong[:3]}; unknown keys: {unknown[:3]})."
            )
        self.state_ = GlobalState(
            weights=payload["weights"], round=payload["round"], extra=payload["extra"]
        )
        for k, v in payload["client_states"].items():
            self.client_states_[int(k)] = ClientState.from_payload(v)
        self._finetuned_ = {}
        replay = payload.get("replay", {"clients": {}, "rounds": {}})
        self._replay = {
            int(k): (
                int(v["round"]),
                PackedState.pack(ClientState.from_payload(v["state"])),
                self.algorithm,
            )
            for k, v in replay["clients"].items()
        }
        self._round_starts = {
            int(r): GlobalState(weights=g["weights"], round=int(g["round"]), extra=g["extra"])
            for r, g in replay["rounds"].items()
        }
        self.history_ = History(
            round_records=list(payload["round_records"]),
            client_records=RecordTable(payload["client_records"]),
            config=self.describe(),
        )


def _weighted_mean(values: list[float], weights: list[int]) -> float:
    total = sum(weights)
    return float(sum(v * w for v, w in zip(values, weights, strict=True)) / max(total, 1))


def _differences(a: Mapping, b: Mapping, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(key, a[key], b[key])`` for every differing key, nested dicts flattened as ``x.y``."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out.extend(_differences(x, y, f"{prefix}{key}."))
        elif x != y:
            out.append((f"{prefix}{key}", x, y))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
