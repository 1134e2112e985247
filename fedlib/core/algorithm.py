"""The algorithm protocol: one object with a server half and a client half, over plain tensors.

:class:`Algorithm` implements FedAvg's behaviour as named hooks; a method is the few hooks it
changes. The server half (``init_global``, ``message_for``, ``aggregate``) sees only the global
state and the replies; the client half (``client_update`` and the hooks it calls) sees only the
round message, that client's persistent state and its data. The in-process simulator and the
Flower adapter drive the same two halves.

Around them, four small hooks serve methods whose model or evaluation differs from FedAvg's:
``prepare_model`` (extra modules, called once when the model is built), ``eval_weights`` (the
weights the global model is evaluated with), ``personal_weights`` (a client's own model) and
``finetune_for_eval`` (adapting that model on the client's data before it is evaluated).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fedlib._validation import NONE, AnyOf, Interval, Options, Validated
from fedlib.core.aggregation import weighted_average
from fedlib.core.batches import iterate_batches
from fedlib.core.protocol import ClientReply, ClientState, GlobalState, RoundMessage
from fedlib.data.base import dataset_labels
from fedlib.losses import LOSSES, make_loss


@dataclass
class LocalContext:
    """Everything a client's local-loss hook may look at during one round.

    Attributes
    ----------
    client_id, round : int
    message : RoundMessage
        What the server sent this round.
    state : ClientState
        This client's persistent state (mutable; the hooks may update it).
    class_counts : ndarray, shape (C,)
        Local training counts ``n_{k,c}``.
    prior : Tensor, shape (C,)
        Local class prior ``pi_k = n_{k,c} / n_k``, on the training device.
    global_params : dict of str to Tensor
        The received values of the trainable parameters (detached, on the device), the anchor
        of proximal terms.
    device : torch.device
    """

    client_id: int
    round: int
    message: RoundMessage
    state: ClientState
    class_counts: np.ndarray
    prior: torch.Tensor
    global_params: dict[str, torch.Tensor]
    device: torch.device
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Algorithm(Validated):
    """FedAvg as hooks (McMahan et al., AISTATS 2017, arXiv:1602.05629).

    Server: ``w^{t+1} = sum_k (n_k / sum_j n_j) w_k^{t+1}`` over the shared keys. Client:
    ``local_epochs`` epochs (or ``local_steps`` steps) of mini-batch training on the local loss,
    starting from the received weights.

    Parameters
    ----------
    optimizer : {"sgd", "adam"}, default "sgd"
    lr : float, default 0.05
        Learning rate before the schedule.
    momentum : float, default 0.9
        SGD momentum (ignored by Adam).
    weight_decay : float, default 0.0
    batch_size : int, default 32
    local_epochs : int, default 1
    local_steps : int or None, default None
        If set, exactly this many optimizer steps per round, cycling through the data; this
        overrides ``local_epochs``.
    optimizer_state : {"reset", "persist"}, default "reset"
        "persist" keeps each client's optimizer moments across rounds (the FedNPR/FCA code
        does this with Adam); "reset" starts a fresh optimizer every round.
    lr_milestones : tuple of int, default ()
        Rounds from which the learning rate is multiplied by ``lr_gamma`` (``lr_t = lr *
        lr_gamma^{#milestones <= t}``).
    lr_gamma : float, default 0.1
    max_grad_norm : float or None, default None
        Clip the gradient norm before each step.
    loss : {"ce", "focal", "bsm", "logit_adjust"}, default "ce"
        Local classification loss (:func:`fedlib.losses.make_loss`): cross-entropy, focal
        ``-(1 - p_y)^gamma log p_y``, balanced softmax ``CE(z + log(pi_k + eps), y)`` or logit
        adjustment ``CE(z + tau log(pi_k + eps), y)`` with the client's local prior ``pi_k``.
        Prediction always uses the raw logits.
    focal_gamma : float, default 1.0
        gamma of the focal loss (1 in the FedNPR/FCA code; 2 in Lin et al.).
    la_tau : float, default 1.0
        tau of logit adjustment.
    spec_model : {"post_local", "global"}, default "post_local"
        The model a client of a method *without* a model of its own (``personalized =
        False``) is evaluated with for specialization: its model after its last local training
        (kept in ``state["post_local"]``, as in the FedNPR/FCA code) or the global model.
        Personalized methods define their own model (``personal_weights``) and ignore it.
    """

    name: ClassVar[str] = "fedavg"
    personalized: ClassVar[bool] = False
    """True when each client keeps a model of its own that should be evaluated (specialization)."""

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    local_epochs: int = 1
    local_steps: int | None = None
    optimizer_state: str = "reset"
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    max_grad_norm: float | None = None
    loss: str = "ce"
    focal_gamma: float = 1.0
    la_tau: float = 1.0
    spec_model: str = "post_local"

    _constraints: ClassVar[dict] = {
        "optimizer": Options(("sgd", "adam")),
        "lr": Interval(float, 0, None, closed="neither"),
        "momentum": Interval(float, 0, 1, closed="left"),
        "weight_decay": Interval(float, 0, None, closed="left"),
        "batch_size": Interval(int, 1, None),
        "local_epochs": Interval(int, 1, None),
        "local_steps": AnyOf(NONE, Interval(int, 1, None)),
        "optimizer_state": Options(("reset", "persist")),
        "lr_gamma": Interval(float, 0, 1, closed="right"),
        "max_grad_norm": AnyOf(NONE, Interval(float, 0, None, closed="neither")),
        "loss": Options(tuple(LOSSES)),
        "focal_gamma": Interval(float, 0, None, closed="left"),
        "la_tau": Interval(float, 0, None, closed="left"),
        "spec_model": Options(("post_local", "global")),
    }

    def _check_consistency(self) -> None:
        milestones = self.lr_milestones
        if not isinstance(milestones, tuple | list) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in milestones
        ):
            raise ValueError(
                f"{type(self).__name__}: 'lr_milestones' must be a tuple of ints >= 0, "
                f"got {milestones!r}."
            )
        self.lr_milestones = tuple(milestones)
        options = {"focal": {"gamma": self.focal_gamma}, "logit_adjust": {"tau": self.la_tau}}
        self._loss_fn = make_loss(self.loss, **options.get(self.loss, {}))

    # ------------------------------------------------------------------ description
    def params(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able (logged with every run)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    # ------------------------------------------------------------------ model
    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The network this method trains, built from the user's model (default: unchanged).

        Called once by the simulator, under the run's seed, right after ``model_fn()``; a method
        that needs extra modules (a personal head, a projection head) wraps the model here, so
        every party builds the same architecture and initial weights.
        """
        return model

    # ------------------------------------------------------------------ keys
    def shared_keys(self, model: nn.Module) -> list[str]:
        """State-dict keys that cross the wire and are averaged.

        FedAvg shares every floating-point tensor, BatchNorm running statistics included;
        integer buffers (``num_batches_tracked``) stay local.
        """
        return [k for k, v in model.state_dict().items() if v.is_floating_point()]

    # ------------------------------------------------------------------ server half
    def init_global(self, model: nn.Module) -> GlobalState:
        """The initial global state from a freshly built model."""
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return GlobalState(weights=weights, round=0, extra={"shared_keys": self.shared_keys(model)})

    def round_config(self, state: GlobalState) -> dict[str, Any]:
        """JSON-able settings for this round (the scheduled learning rate)."""
        decays = sum(1 for m in self.lr_milestones if state.round >= m)
        return {"lr": self.lr * self.lr_gamma**decays}

    def message_for(self, state: GlobalState, client_id: int) -> RoundMessage:
        """What client ``client_id`` receives this round: the shared weights and the config."""
        keys = state.extra["shared_keys"]
        return RoundMessage(
            round=state.round,
            arrays={k: state.weights[k] for k in keys},
            config=self.round_config(state),
        )

    def aggregate(self, state: GlobalState, replies: Sequence[ClientReply]) -> GlobalState:
        """Weighted mean of the replies' arrays (weights ``n_k``); other keys keep their value."""
        weights = dict(state.weights)
        if replies and replies[0].arrays:
            averaged = weighted_average(
                [r.arrays for r in replies], [r.num_examples for r in replies]
            )
            weights.update(averaged)
        return GlobalState(weights=weights, round=state.round + 1, extra=dict(state.extra))

    # ------------------------------------------------------------------ client half
    def client_update(
        self,
        model: nn.Module,
        message: RoundMessage,
        state: ClientState,
        data: Dataset,
        *,
        client_id: int,
        num_classes: int,
        initial_weights: Mapping[str, torch.Tensor],
        generator: torch.Generator,
        device: torch.device,
    ) -> tuple[ClientReply, ClientState]:
        """One round of local work; returns the reply and the client's new persistent state.

        ``model`` is a scratch module of the right architecture: its weights are overwritten
        from the message, then from this client's personal state (falling back to
        ``initial_weights`` for keys the client has never trained).
        """
        state = dict(state)
        self.load_client_model(model, message, state, initial_weights)
        model.to(device).train()
        counts = np.bincount(dataset_labels(data), minlength=num_classes)
        ctx = LocalContext(
            client_id=client_id,
            round=message.round,
            message=message,
            state=state,
            class_counts=counts,
            prior=torch.as_tensor(counts / max(counts.sum(), 1), dtype=torch.float32).to(device),
            global_params={
                name: message.arrays[name].detach().to(device)
                for name, _ in model.named_parameters()
                if name in message.arrays
            },
            device=device,
        )
        self.before_local_training(model, data, ctx)
        optimizer = self.make_optimizer(model, lr=float(message.config.get("lr", self.lr)))
        if self.optimizer_state == "persist" and "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
            for group in optimizer.param_groups:
                group["lr"] = float(message.config.get("lr", self.lr))
        loss_sum, seen = self.train_locally(model, optimizer, data, ctx, generator, device)
        self.after_local_training(model, data, ctx)
        if self.optimizer_state == "persist":
            state["optimizer"] = optimizer.state_dict()
        sent = set(message.arrays)
        model_state = model.state_dict()
        state["personal"] = {
            k: v.detach().cpu().clone() for k, v in model_state.items() if k not in sent
        }
        if self.keeps_post_local():
            state["post_local"] = {k: v.detach().cpu().clone() for k, v in model_state.items()}
        reply = ClientReply(
            client_id=client_id,
            arrays=self.reply_arrays(model, ctx),
            num_examples=len(data),
            metrics={"train_loss": loss_sum / max(seen, 1), **ctx.extras.get("metrics", {})},
        )
        return reply, state

    def load_client_model(
        self,
        model: nn.Module,
        message: RoundMessage,
        state: ClientState,
        initial_weights: Mapping[str, torch.Tensor],
    ) -> None:
        """Received arrays, then the client's personal tensors, then initial values."""
        personal = state.get("personal", {})
        full = {}
        for key in model.state_dict():
            if key in message.arrays:
                full[key] = message.arrays[key]
            elif key in personal:
                full[key] = personal[key]
            else:
                full[key] = initial_weights[key]
        model.load_state_dict(full)

    def reply_arrays(self, model: nn.Module, ctx: LocalContext) -> dict[str, torch.Tensor]:
        """The trained values of the keys the server sent (detached CPU copies)."""
        current = model.state_dict()
        return {k: current[k].detach().cpu().clone() for k in ctx.message.arrays}

    def make_optimizer(self, model: nn.Module, *, lr: float) -> torch.optim.Optimizer:
        """The local optimizer over trainable parameters."""
        params = [p for p in model.parameters() if p.requires_grad]
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            params, lr=lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def train_locally(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        ctx: LocalContext,
        generator: torch.Generator,
        device: torch.device,
        *,
        epochs: int | None = None,
    ) -> tuple[float, int]:
        """The local loop: epochs (or a fixed number of steps) of ``local_loss`` descent.

        ``epochs``, when given, runs exactly that many epochs instead of ``local_epochs`` /
        ``local_steps`` (for methods with several phases: FedRep, Ditto, FedBABU's fine-tuning).
        Returns the sum of per-batch losses weighted by batch size, and the examples seen.
        """
        loss_sum, seen, steps = 0.0, 0, 0
        max_steps = self.local_steps if epochs is None else None
        if epochs is None:
            epochs = self.local_epochs if max_steps is None else None
        elif epochs == 0:
            return loss_sum, seen
        epoch = 0
        while True:
            for batch in iterate_batches(data, self.batch_size, shuffle=True, generator=generator):
                batch = tuple(b.to(device) for b in batch)
                optimizer.zero_grad(set_to_none=True)
                loss = self.local_loss(model, batch, ctx)
                loss.backward()
                self.before_step(model, ctx)
                if self.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), self.max_grad_norm)
                optimizer.step()
                n = batch[0].shape[0]
                loss_sum += float(loss.detach()) * n
                seen += n
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    return loss_sum, seen
            epoch += 1
            if epochs is not None and epoch >= epochs:
                return loss_sum, seen
            if len(data) == 0:
                return loss_sum, seen

    # ------------------------------------------------------------------ hooks
    def local_loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], ctx: LocalContext):
        """The loss minimised locally: the ``loss`` option on the model's logits."""
        x, y = batch[0], batch[1]
        return self.classification_loss(model(x), y, ctx)

    def classification_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, ctx: LocalContext
    ) -> torch.Tensor:
        """The configured classification loss with the client's local prior."""
        return self._loss_fn(logits, targets, prior=ctx.prior)

    def before_local_training(self, model: nn.Module, data: Dataset, ctx: LocalContext) -> None:
        """Hook run once per round after the weights are loaded (e.g. refresh centroids)."""

    def after_local_training(self, model: nn.Module, data: Dataset, ctx: LocalContext) -> None:
        """Hook run once per round after the last local step."""

    def before_step(self, model: nn.Module, ctx: LocalContext) -> None:
        """Hook run after ``backward`` and before the optimizer step (e.g. edit gradients)."""

    # ------------------------------------------------------------------ evaluation
    def keeps_post_local(self) -> bool:
        """Whether a client keeps a copy of its model after local training,
        ``state["post_local"]`` (for ``spec_model="post_local"``; MOON needs it always)."""
        return self.spec_model == "post_local" and not self.personalized

    def eval_weights(
        self, global_weights: Mapping[str, torch.Tensor], state: GlobalState
    ) -> dict[str, torch.Tensor]:
        """The weights the *global* model is evaluated with (generalization).

        Default: the global weights themselves. CReFF swaps in its re-trained classifier.
        """
        return dict(global_weights)

    def personal_weights(
        self,
        global_weights: Mapping[str, torch.Tensor],
        state: ClientState,
    ) -> dict[str, torch.Tensor]:
        """The weights client ``k`` would predict with (specialization).

        Default: with ``spec_model="post_local"``, the client's model after its last local
        training; otherwise the global weights overlaid with its personal tensors (the global
        model itself for FedAvg; global body and own head for FedPer). A client that has never
        trained gets the global model.
        """
        merged = dict(global_weights)
        if self.spec_model == "post_local" and not self.personalized and "post_local" in state:
            merged.update(state["post_local"])
            return merged
        merged.update(state.get("personal", {}))
        return merged

    def finetune_for_eval(
        self,
        model: nn.Module,
        data: Dataset,
        *,
        num_classes: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        """Adapt a client's model on its training data before specialization (default: no-op).

        ``model`` (the simulator's scratch model) holds ``personal_weights``; the result is used
        for evaluation only, never sent nor stored (FedBABU fine-tunes here).
        """


def build_model(model_fn: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model under a fixed seed, so every party gets the same initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_fn()


def clone_module(model: nn.Module) -> nn.Module:
    """A deep copy (used for frozen reference models such as MOON's previous model)."""
    return copy.deepcopy(model)
