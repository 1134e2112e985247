"""The in-process simulator: drives an :class:`~fedlib.core.algorithm.Algorithm`'s server and
client halves over a :class:`~fedlib.data.FederatedDataset`, round by round, seeded."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from fedlib._validation import NONE, AnyOf, InstanceOf, Interval, Options, validate_params
from fedlib.core.algorithm import Algorithm, build_model
from fedlib.core.batches import iterate_batches
from fedlib.core.checkpoint import load_checkpoint, save_checkpoint
from fedlib.core.history import History
from fedlib.core.protocol import ClientReply, ClientState, GlobalState
from fedlib.data.base import FederatedDataset, dataset_labels
from fedlib.utils import device as default_device

logger = logging.getLogger("fedlib")

CHECKPOINT_FORMAT = 1
EVAL_SEED_TAG = 1
"""Fourth part of the seed of evaluation-time work, ``(seed, round, client, EVAL_SEED_TAG)``."""


class ClientError(RuntimeError):
    """A client failed during local training (the message names the client and the round)."""

    def __init__(self, client_id: int, round_: int, cause: BaseException | str):
        self.client_id, self.round = client_id, round_
        super().__init__(f"client {client_id} failed in round {round_ + 1}: {cause}")


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, round, client id), independent per tuple."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 1024, device: torch.device
) -> torch.Tensor:
    """Logits of ``model`` on every example of ``dataset`` (eval mode), shape (N, C), on CPU."""
    was_training = model.training
    model.eval()
    outputs = [
        model(batch[0].to(device)).float().cpu()
        for batch in iterate_batches(dataset, batch_size, shuffle=False)
    ]
    model.train(was_training)
    if not outputs:
        return torch.empty(0, 0)
    return torch.cat(outputs)


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
        Share of clients sampled per round, ``m = max(1, round(fraction * K))``, uniformly
        without replacement from a generator seeded by ``(seed, round)``.
    seed : int, default 0
        Every random choice derives from ``(seed, round, client)``, so a resumed run and an
        uninterrupted one are identical.
    device : torch.device, optional
        Default :func:`fedlib.device` (CUDA when present).
    eval_every : int or None, default 1
        Evaluate the global (and, for personalized methods, each client's) model every
        ``eval_every`` rounds and after the last; ``None`` evaluates only after the last.
    evaluate_clients : bool or None, default None
        Also evaluate each client's own model (``Algorithm.personal_weights``, then
        ``Algorithm.finetune_for_eval``) on its own test split every evaluation round
        (columns ``personal_acc``/``personal_bacc`` and ``spec_bacc``). ``None``: only for
        personalized methods. ``True`` gives FedAvg-like methods their post-local
        specialization curve (``spec_model``).
    progress : bool, default True
        Show a tqdm bar over rounds.
    on_client_error : {"raise", "skip"}, default "raise"
        "raise" stops the run with :class:`ClientError`; "skip" drops that client from the
        round's aggregation with a warning. Non-finite updates count as failures.
    checkpoint_dir : path, optional
        Save a checkpoint after every round; ``run(resume=True)`` continues from it.
    """

    _constraints = {
        "num_rounds": Interval(int, 1, None),
        "fraction": Interval(float, 0, 1, closed="right"),
        "seed": Interval(int, 0, None),
        "eval_every": AnyOf(NONE, Interval(int, 1, None)),
        "evaluate_clients": AnyOf(NONE, InstanceOf(bool)),
        "eval_batch_size": Interval(int, 1, None),
        "progress": InstanceOf(bool),
        "on_client_error": Options(("raise", "skip")),
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
        seed: int = 0,
        device: torch.device | str | None = None,
        eval_every: int | None = 1,
        evaluate_clients: bool | None = None,
        eval_batch_size: int = 1024,
        progress: bool = True,
        on_client_error: str = "raise",
        checkpoint_dir: str | None = None,
    ):
        validate_params(
            "Simulation",
            dict(
                algorithm=algorithm,
                dataset=dataset,
                num_rounds=num_rounds,
                fraction=fraction,
                seed=seed,
                eval_every=eval_every,
                evaluate_clients=evaluate_clients,
                eval_batch_size=eval_batch_size,
                progress=progress,
                on_client_error=on_client_error,
            ),
            self._constraints,
        )
        if not callable(model_fn):
            raise TypeError(f"Simulation: 'model_fn' must be callable, got {model_fn!r}.")
        self.algorithm = algorithm
        self.model_fn = model_fn
        self.dataset = dataset
        self.num_rounds = num_rounds
        self.fraction = fraction
        self.seed = seed
        self.device = torch.device(device) if device is not None else default_device()
        self.eval_every = eval_every
        self.evaluate_clients = (
            algorithm.personalized if evaluate_clients is None else evaluate_clients
        )
        self.eval_batch_size = eval_batch_size
        self.progress = progress
        self.on_client_error = on_client_error
        self.checkpoint_dir = checkpoint_dir

        self.model_ = build_model(lambda: algorithm.prepare_model(model_fn()), seed).to(
            self.device
        )
        self.initial_weights_ = {
            k: v.detach().cpu().clone() for k, v in self.model_.state_dict().items()
        }
        self.state_: GlobalState = algorithm.init_global(self.model_)
        self.client_states_: dict[int, ClientState] = {k: {} for k in dataset.client_ids()}
        self._finetuned_: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}
        self.history_ = History(config=self.describe())

    # ------------------------------------------------------------------ public
    def describe(self) -> dict[str, Any]:
        """The run's settings (what a checkpoint must match to be resumed)."""
        return {
            "method": self.algorithm.name,
            "method_params": self.algorithm.params(),
            "dataset": self.dataset.name,
            "num_clients": self.dataset.num_clients,
            "fraction": self.fraction,
            "seed": self.seed,
        }

    def sample_clients(self, round_: int) -> list[int]:
        """The sorted ids of the clients that train in ``round_``."""
        k = self.dataset.num_clients
        m = max(1, int(round(self.fraction * k)))
        if m >= k:
            return list(range(k))
        rng = np.random.default_rng([self.seed, round_])
        return sorted(int(c) for c in rng.choice(k, size=m, replace=False))

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
                    if "bacc" in record:
                        shown["bacc"] = f"{record['bacc']:.3f}"
                    bar.set_postfix(shown)
                if self.checkpoint_dir is not None:
                    save_checkpoint(self.checkpoint_dir, self._checkpoint_payload())
        bar.close()
        return self.history_

    def global_model(self) -> nn.Module:
        """The scratch model loaded with the global model's evaluation weights
        (``Algorithm.eval_weights``: the global weights, or CReFF's re-trained classifier)."""
        weights = self.algorithm.eval_weights(self._full_global_weights(), self.state_)
        self.model_.load_state_dict(weights)
        return self.model_

    def client_model(self, client_id: int) -> nn.Module:
        """The scratch model loaded with client ``client_id``'s own weights.

        ``Algorithm.personal_weights``, then ``Algorithm.finetune_for_eval`` on the client's
        training data (FedBABU), seeded by ``(seed, rounds done, client)``; the fine-tuned
        weights are used for evaluation only.
        """
        cached = self._finetuned_.get(client_id)
        if cached is not None and cached[0] == self.state_.round:
            self.model_.load_state_dict(cached[1])
            return self.model_
        weights = self.algorithm.personal_weights(
            self._full_global_weights(), self.client_states_[client_id]
        )
        self.model_.load_state_dict(weights)
        if type(self.algorithm).finetune_for_eval is Algorithm.finetune_for_eval:
            return self.model_
        seed = derive_seed(self.seed, self.state_.round, client_id, EVAL_SEED_TAG)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.algorithm.finetune_for_eval(
                self.model_,
                self.dataset.train[client_id],
                num_classes=self.dataset.num_classes,
                generator=torch.Generator().manual_seed(seed),
                device=self.device,
            )
        # fine-tuning is deterministic per (round, client): keep the result for the other
        # evaluations of this round (the per-round history, then fedlib.evaluation)
        state = {k: v.detach().clone() for k, v in self.model_.state_dict().items()}
        self._finetuned_[client_id] = (self.state_.round, state)
        return self.model_

    # ------------------------------------------------------------------ one round
    def _play_round(self, round_: int) -> dict[str, Any]:
        tic = time.perf_counter()
        selected = self.sample_clients(round_)
        replies: list[ClientReply] = []
        failed: list[int] = []
        for client_id in selected:
            reply = self._train_client(round_, client_id)
            if reply is None:
                failed.append(client_id)
            else:
                replies.append(reply)
        if not replies:
            raise RuntimeError(
                f"Simulation: every sampled client failed in round {round_ + 1} "
                f"(clients {failed}); the global model was left unchanged."
            )
        self.state_ = self.algorithm.aggregate(self.state_, replies)
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
        done = round_ + 1
        if done == self.num_rounds or (self.eval_every is not None and done % self.eval_every == 0):
            self._evaluate(record, client_rows)
        record["seconds"] = time.perf_counter() - tic
        self.history_.round_records.append(record)
        self.history_.client_records.extend(client_rows[c] for c in sorted(client_rows))
        return record

    def local_updates(
        self, client_ids: list[int] | None = None, *, algorithm: Algorithm | None = None
    ) -> list[ClientReply]:
        """The replies the next round's local training would produce, without applying them.

        Nothing changes: neither the global state nor any client's state. The clients train
        exactly as in the next round (same seeds), so ``algorithm.aggregate`` of these replies
        is that round's new global state. ``algorithm`` swaps in another method (e.g. more
        local epochs) to compare local work from the same starting point.
        """
        ids = self.sample_clients(self.state_.round) if client_ids is None else client_ids
        with torch.random.fork_rng(devices=[]):
            return [
                self._local_work(self.state_.round, k, algorithm or self.algorithm)[0]
                for k in ids
            ]

    def _local_work(
        self, round_: int, client_id: int, algorithm: Algorithm
    ) -> tuple[ClientReply, ClientState]:
        """One client's seeded local round; raises if the update is not finite."""
        seed = derive_seed(self.seed, round_, client_id)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        message = algorithm.message_for(self.state_, client_id)
        reply, new_state = algorithm.client_update(
            self.model_,
            message,
            self.client_states_[client_id],
            self.dataset.train[client_id],
            client_id=client_id,
            num_classes=self.dataset.num_classes,
            initial_weights=self.initial_weights_,
            generator=generator,
            device=self.device,
        )
        bad = [
            k
            for k, v in reply.arrays.items()
            if v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if bad:
            raise FloatingPointError(f"its update has non-finite values in {bad[:3]}")
        if not math.isfinite(reply.metrics.get("train_loss", 0.0)):
            raise FloatingPointError("its training loss is not finite")
        return reply, new_state

    def _train_client(self, round_: int, client_id: int) -> ClientReply | None:
        try:
            reply, new_state = self._local_work(round_, client_id, self.algorithm)
        except Exception as exc:  # noqa: BLE001 - any client failure is handled by policy
            error = ClientError(client_id, round_, exc)
            if self.on_client_error == "raise":
                raise error from exc
            warnings.warn(f"{error}; skipped in this round's aggregation.", stacklevel=2)
            logger.warning("%s; skipped in this round's aggregation.", error)
            return None
        self.client_states_[client_id] = new_state
        return reply

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, record: dict[str, Any], client_rows: dict[int, dict[str, Any]]) -> None:
        from fedlib.metrics import accuracy, balanced_accuracy

        model = self.global_model()
        ys, preds = [], []
        per_client_bacc, personal_bacc = [], []
        for k in self.dataset.client_ids():
            test = self.dataset.test[k]
            y = dataset_labels(test)
            if len(y) == 0:
                continue
            logits = predict(model, test, batch_size=self.eval_batch_size, device=self.device)
            pred = logits.argmax(1).numpy()
            ys.append(y)
            preds.append(pred)
            row = client_rows.setdefault(k, {"round": record["round"], "client": k})
            row["acc"] = accuracy(y, pred)
            row["bacc"] = balanced_accuracy(y, pred)
            per_client_bacc.append(row["bacc"])
        if self.evaluate_clients:
            for k in self.dataset.client_ids():
                test = self.dataset.test[k]
                y = dataset_labels(test)
                if len(y) == 0:
                    continue
                own = self.client_model(k)
                pred = predict(own, test, batch_size=self.eval_batch_size, device=self.device)
                pred = pred.argmax(1).numpy()
                row = client_rows[k]
                row["personal_acc"] = accuracy(y, pred)
                row["personal_bacc"] = balanced_accuracy(y, pred)
                personal_bacc.append(row["personal_bacc"])
            record["spec_bacc"] = float(np.mean(personal_bacc))
        y_all, pred_all = np.concatenate(ys), np.concatenate(preds)
        record["acc"] = accuracy(y_all, pred_all)
        record["bacc"] = balanced_accuracy(y_all, pred_all)
        record["client_mean_bacc"] = float(np.mean(per_client_bacc))

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
            "client_states": {str(k): v for k, v in self.client_states_.items()},
            "round_records": self.history_.round_records,
            "client_records": self.history_.client_records,
        }

    def _restore(self) -> None:
        if self.checkpoint_dir is None:
            raise ValueError("Simulation.run: 'resume=True' needs a 'checkpoint_dir'.")
        payload = load_checkpoint(self.checkpoint_dir)
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"Simulation.run: checkpoint format {payload.get('format')!r} is not "
                f"{CHECKPOINT_FORMAT}."
            )
        expected = _jsonable(self.describe())
        if _jsonable(payload["config"]) != expected:
            raise ValueError(
                "Simulation.run: the checkpoint was written by a run with other settings "
                f"({payload['config']}) than this one ({expected})."
            )
        if payload["round"] > self.num_rounds:
            raise ValueError(
                f"Simulation.run: the checkpoint is at round {payload['round']}, beyond "
                f"'num_rounds'={self.num_rounds}."
            )
        self.state_ = GlobalState(
            weights=payload["weights"], round=payload["round"], extra=payload["extra"]
        )
        self.client_states_ = {int(k): v for k, v in payload["client_states"].items()}
        self._finetuned_ = {}
        self.history_ = History(
            round_records=list(payload["round_records"]),
            client_records=list(payload["client_records"]),
            config=self.describe(),
        )


def _weighted_mean(values: list[float], weights: list[int]) -> float:
    total = sum(weights)
    return float(sum(v * w for v, w in zip(values, weights, strict=True)) / max(total, 1))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
