"""The algorithm protocol: one object with a server half and a client half, over plain tensors.

:class:`Algorithm` implements FedAvg as named hooks; a method is the few hooks it changes. The
server half sees only the global state and the replies; the client half sees only the round
message, that client's persistent state and its data. The in-process simulator and the Flower
adapter drive the same two halves.

To change ... override (or set) ...

======================================  =====================================================
what                                    hook or option
======================================  =====================================================
the network (extra heads, wrappers)     ``prepare_model(model)``
which tensors are shared and averaged   ``shared_keys(model)``
what each client receives               ``message_for(state, client_id)`` (``side`` channel)
how the new global weights are made     ``server_step(state, averaged)`` (server optimizers);
                                        ``aggregate`` only to aggregate differently
what the server does with side data     ``process_side(new_state, replies)``
the local objective                     ``local_loss(model, batch, ctx)`` /
                                        ``classification_loss(logits, y, ctx)``
work before / after local training      ``before_local_training`` / ``after_local_training``
the local loop (several phases)         ``train_locally``, each phase a ``train_phase``
the local optimizer                     ``make_optimizer(model, lr=...)``
what the client uploads                 ``reply_arrays(model, ctx)``; side data in ``ctx.side``
what a client keeps between rounds      ``ctx.state`` (:class:`~fedlib.core.protocol.
                                        ClientState`); method entries declared in
                                        ``client_state_fields``
the model evaluated for generalization  ``eval_weights(global_weights, state)``
the model evaluated for specialization  option ``spec_model``; ``personal_weights`` defines
                                        "personal"; ``finetune_for_eval(model, ctx)`` adapts it
======================================  =====================================================
"""

from __future__ import annotations

import copy
import dataclasses
import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.utils.data import Dataset

from fedlib._validation import NONE, AnyOf, InstanceOf, Interval, Options, Validated
from fedlib.core.aggregation import weighted_average
from fedlib.core.batches import iterate_batches
from fedlib.core.layout import ModelLayout, model_layout
from fedlib.core.protocol import ClientReply, ClientState, GlobalState, RoundMessage
from fedlib.data.base import dataset_labels
from fedlib.losses import LOSSES, make_loss

CLASS_COUNTS = "class_counts"
"""Side-channel key of a client's training class counts ``n_{k,c}`` (``la_prior="global"``,
FedLC's global counts)."""
GLOBAL_COUNTS = "global_class_counts"
"""Side-channel key of the server's sum of the clients' reported class counts."""


@dataclass
class LocalContext:
    """Everything a client's hooks may look at during one round of local work.

    Built in one place, :meth:`Algorithm.local_context`.

    Attributes
    ----------
    client_id, round : int
    message : RoundMessage
        What the server sent this round.
    state : ClientState
        This client's working copy of its persistent state; it is stored when the round
        commits and dropped if the round is aborted.
    data : Dataset
        The client's training split.
    class_counts : ndarray, shape (C,)
        Local training counts ``n_{k,c}``.
    prior : Tensor, shape (C,)
        The class prior of the prior-dependent losses: local ``pi_k = n_{k,c} / n_k``, or the
        federation's (``la_prior="global"``), on the training device.
    global_params : mapping of str to Tensor
        The received values of the trainable parameters (detached, on the device), the anchor
        of proximal terms (:class:`ReceivedParams`: gathered when first read).
    device : torch.device
    generator : torch.Generator
        Drives shuffling; seeded by ``(seed, round, client)``.
    lr : float
        This round's learning rate (after the schedule).
    extras : dict
        Scratch space for this round's hooks (e.g. the phase of a multi-phase method).
    side : dict of str to Tensor
        Side data for the server; becomes ``ClientReply.side``.
    metrics : dict of str to float
        Extra training statistics; merged into ``ClientReply.metrics``.
    """

    client_id: int
    round: int
    message: RoundMessage
    state: ClientState
    data: Dataset
    class_counts: np.ndarray
    prior: torch.Tensor
    global_params: Mapping[str, torch.Tensor]
    device: torch.device
    generator: torch.Generator
    lr: float
    extras: dict[str, Any] = field(default_factory=dict)
    side: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


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
        ``-alpha_y (1 - p_y)^gamma log p_y``, balanced softmax ``CE(z + log(pi + eps), y)`` or
        logit adjustment ``CE(z + tau log(pi + eps), y)``. Prediction uses the raw logits.
    focal_gamma : float, default 1.0
        gamma of the focal loss (1 in the FedNPR/FCA code; 2 in Lin et al.).
    focal_alpha : float in [0, 1], tuple of per-class weights, or None, default None
        alpha of the focal loss (``None``: 1).
    la_tau : float, default 1.0
        tau of logit adjustment.
    la_prior : {"local", "global"}, default "local"
        The prior ``pi`` of "bsm"/"logit_adjust": the client's own ``n_{k,c}/n_k``, or the
        federation's ``sum_k n_{k,c} / sum_k n_k``, built by the server from the class counts
        the clients report in the side channel (a client uses its local prior until the server
        has heard from every client once; the counts reveal each client's label mix).
    client_weighting : {"num_examples", "uniform"}, default "num_examples"
        Weights of the server average: ``n_k`` (FedAvg) or equal weights.
    bn_int_buffers : {"skip", "average_cast"}, default "skip"
        Integer buffers (BatchNorm's ``num_batches_tracked``) stay local, or are averaged
        and cast back to integers (truncated), as the FedNPR/FCA code does.
    spec_model : {"post_local", "global", "personal"}, default "post_local"
        The model a client is evaluated with for specialization: its model after its last
        local training (``ClientState.post_local``, as in the FedNPR/FCA code), the global
        model, or the method's personal model (:meth:`personal_weights`; the default of
        personalized methods, and only available to them).
    """

    name: ClassVar[str] = "fedavg"
    personalized: ClassVar[bool] = False
    """True when each client has a model of its own (``spec_model="personal"`` is its default)."""
    client_state_fields: ClassVar[dict[str, str]] = {}
    """Names (and meaning) of the entries this method keeps in ``ClientState.method``."""

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
    focal_alpha: float | tuple[float, ...] | None = None
    la_tau: float = 1.0
    la_prior: str = "local"
    client_weighting: str = "num_examples"
    bn_int_buffers: str = "skip"
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
        "focal_alpha": AnyOf(
            NONE, Interval(float, 0, 1), InstanceOf(tuple, list, description="a tuple")
        ),
        "la_tau": Interval(float, 0, None, closed="left"),
        "la_prior": Options(("local", "global")),
        "client_weighting": Options(("num_examples", "uniform")),
        "bn_int_buffers": Options(("skip", "average_cast")),
        "spec_model": Options(("post_local", "global", "personal")),
    }

    def _check_consistency(self) -> None:
        owner = type(self).__name__
        milestones = self.lr_milestones
        if not isinstance(milestones, tuple | list) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in milestones
        ):
            raise ValueError(
                f"{owner}: 'lr_milestones' must be a tuple of ints >= 0, got {milestones!r}."
            )
        self.lr_milestones = tuple(milestones)
        if isinstance(self.focal_alpha, list):
            self.focal_alpha = tuple(self.focal_alpha)
        if self.spec_model == "personal" and not self.personalized:
            raise ValueError(
                f"{owner}: 'spec_model'='personal' needs a method with a personal model; "
                f"{owner} has none, use 'post_local' or 'global'."
            )
        options: dict[str, dict[str, Any]] = {
            "focal": {"gamma": self.focal_gamma},
            "logit_adjust": {"tau": self.la_tau},
        }
        if self.focal_alpha is not None:
            options["focal"]["alpha"] = self.focal_alpha
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

    def shared_keys(self, model: nn.Module) -> list[str]:
        """State-dict keys that cross the wire and are averaged.

        FedAvg shares every floating-point tensor, BatchNorm running statistics included;
        integer buffers (``num_batches_tracked``) stay local unless
        ``bn_int_buffers="average_cast"``.
        """
        if self.bn_int_buffers == "average_cast":
            return list(model.state_dict())
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
        """What client ``client_id`` receives: the shared weights, the config and, when the
        server knows them, the federation's class counts (``la_prior="global"``)."""
        keys = state.extra["shared_keys"]
        side = {}
        if self.wants_class_counts() and GLOBAL_COUNTS in state.extra:
            side[GLOBAL_COUNTS] = state.extra[GLOBAL_COUNTS]
        return RoundMessage(
            round=state.round,
            arrays={k: state.weights[k] for k in keys},
            side=side,
            config=self.round_config(state),
        )

    def aggregate(self, state: GlobalState, replies: Sequence[ClientReply]) -> GlobalState:
        """The new global state: the clients' arrays averaged (``client_weighting``), moved by
        :meth:`server_step`; keys nobody sent keep their value; then :meth:`process_side`.

        ``replies`` may be :class:`~fedlib.core.aggregation.StreamedReplies`: the simulator
        averaged the arrays while the clients trained (``replies.averaged``) and the replies'
        own ``arrays`` are empty. A method that needs every client's arrays overrides this
        hook (or ``client_weights``); the simulator then passes the full replies.
        """
        new = GlobalState(weights=dict(state.weights), round=state.round + 1,
                          extra=dict(state.extra))
        averaged = getattr(replies, "averaged", None)  # streamed by the simulator
        if averaged is None and replies and replies[0].arrays:
            averaged = weighted_average(
                [r.arrays for r in replies], self.client_weights(replies)
            )
        if averaged:
            new.weights.update(self.server_step(state, averaged, new.extra))
        self.process_side(new, replies)
        return new

    def client_weights(self, replies: Sequence[ClientReply]) -> list[float]:
        """Weights of the server average: ``n_k``, or 1 each (``client_weighting``)."""
        if self.client_weighting == "uniform":
            return [1.0] * len(replies)
        return [float(r.num_examples) for r in replies]

    def server_step(
        self,
        previous: GlobalState,
        averaged: Mapping[str, torch.Tensor],
        extra: dict[str, Any],
    ) -> dict[str, torch.Tensor]:
        """The new values of the averaged keys (FedAvg: the average itself).

        Server optimizers (FedAvgM, FedAdam, FedYogi) override this: ``previous`` holds
        ``w^t``, ``averaged`` the clients' mean, and ``extra`` is the new state's dict where
        they keep their moments.
        """
        return dict(averaged)

    def process_side(self, state: GlobalState, replies: Sequence[ClientReply]) -> None:
        """Update the new global state's ``extra`` from the replies' side channel.

        Default: collect the class counts the clients report (``la_prior="global"``) and,
        once every client has reported, their sum ``GLOBAL_COUNTS``. The replies' ``arrays``
        are empty when the simulator streamed them into the average (see :meth:`aggregate`).
        """
        if not self.wants_class_counts():
            return
        known = dict(state.extra.get("client_class_counts", {}))
        for reply in replies:
            if CLASS_COUNTS in reply.side:
                known[str(reply.client_id)] = reply.side[CLASS_COUNTS]
        if known:
            state.extra["client_class_counts"] = known
            state.extra[GLOBAL_COUNTS] = torch.stack(list(known.values())).sum(0)

    def wants_class_counts(self) -> bool:
        """Whether clients report their class counts in the side channel."""
        return self.la_prior == "global"

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
        keep_post_local: bool | None = None,
    ) -> tuple[ClientReply, ClientState]:
        """One round of local work; returns the reply and the client's new persistent state.

        ``state`` is not modified: the hooks work on a working copy (new containers sharing the
        stored tensors), which the caller stores only if the round commits. Hooks replace
        entries of ``ctx.state`` (``ctx.state.method[name] = new_value``); a hook that
        modifies a stored tensor in place is reported (``RuntimeError``), since an aborted round
        could not undo it. ``model`` is a scratch module of the right architecture: its weights
        are overwritten from the message, then from the client's personal tensors (falling
        back to ``initial_weights`` for keys the client has never trained).

        ``keep_post_local`` (default: ``spec_model == "post_local"``) stores the whole trained
        model in ``ClientState.post_local``; the simulator passes ``False`` when nothing will
        read it during the run (see :class:`~fedlib.core.Simulation`).
        """
        ctx, guard = self._begin_local_work(
            model, message, state, data, initial_weights,
            dict(client_id=client_id, num_classes=num_classes, generator=generator, device=device),
        )
        self.before_local_training(model, ctx)
        optimizer = self.make_optimizer(model, lr=ctx.lr)
        if self.optimizer_state == "persist" and ctx.state.optimizer is not None:
            self.load_optimizer_state(optimizer, ctx.state.optimizer, ctx.lr)
        loss_sum, seen = self.train_locally(model, optimizer, ctx)
        self.after_local_training(model, ctx)
        if self.optimizer_state == "persist":
            ctx.state.optimizer = optimizer.state_dict()
        return self._finish_local_work(
            model, ctx, guard, loss_sum, seen, num_examples=len(data),
            keep_post_local=keep_post_local,
        )

    def _begin_local_work(
        self,
        model: nn.Module,
        message: RoundMessage,
        state: ClientState,
        data: Dataset,
        initial_weights: Mapping[str, torch.Tensor],
        setting: dict[str, Any],
    ) -> tuple[LocalContext, _StateGuard]:
        """The working copy of ``state``, the loaded model (on ``device``, train mode) and the
        context (``setting``: the keywords of :meth:`local_context`): everything before
        ``before_local_training``."""
        guard = _StateGuard(state)
        state = working_copy(state)
        layout = _placed(model, setting["device"])
        if type(self).load_client_model is Algorithm.load_client_model:
            self._load_client_weights(model, message, state, initial_weights, layout.tensors)
        else:
            self.load_client_model(model, message, state, initial_weights)
        if not all(m.training for m in model_layout(model).modules(model)):
            model.train()
        return self.local_context(model, message, state, data, **setting), guard

    def _finish_local_work(
        self,
        model: nn.Module,
        ctx: LocalContext,
        guard: _StateGuard,
        loss_sum: float,
        seen: int,
        *,
        num_examples: int,
        keep_post_local: bool | None,
    ) -> tuple[ClientReply, ClientState]:
        """The new state (personal tensors, post-local model) and the reply, from the trained
        ``model``: everything after ``after_local_training``."""
        state = ctx.state
        sent = ctx.message.arrays
        if keep_post_local is None:
            keep_post_local = self.spec_model == "post_local"
        with torch.no_grad():  # copies, never part of a graph
            model_state = model_layout(model).tensors
            if type(self).reply_arrays is Algorithm.reply_arrays:  # the hook, on this state
                arrays = {k: model_state[k].cpu().clone() for k in sent}
            else:
                arrays = self.reply_arrays(model, ctx)
            state.personal = {k: v.cpu().clone() for k, v in model_state.items() if k not in sent}
            state.post_local = (
                {k: v.cpu().clone() for k, v in model_state.items()} if keep_post_local else None
            )
        self._check_state_fields(state)
        guard.check(type(self).__name__)
        if self.wants_class_counts():
            ctx.side[CLASS_COUNTS] = torch.as_tensor(ctx.class_counts, dtype=torch.float64)
        reply = ClientReply(
            client_id=ctx.client_id,
            arrays=arrays,
            num_examples=num_examples,
            side=dict(ctx.side),
            metrics={"train_loss": loss_sum / max(seen, 1), **ctx.metrics},
        )
        return reply, state

    def local_context(
        self,
        model: nn.Module,
        message: RoundMessage,
        state: ClientState,
        data: Dataset,
        *,
        client_id: int,
        num_classes: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> LocalContext:
        """The context of one client's local work (training, or fine-tuning for evaluation);
        ``model`` holds the weights the work starts from."""
        counts, prior = _local_counts(data, num_classes)
        if self.la_prior == "global" and GLOBAL_COUNTS in message.side:
            prior = _prior(message.side[GLOBAL_COUNTS].numpy())
        return LocalContext(
            client_id=client_id,
            round=message.round,
            message=message,
            state=state,
            data=data,
            class_counts=counts,
            prior=prior.to(device),
            global_params=ReceivedParams(model, message.arrays, device),
            device=device,
            generator=generator,
            lr=float(message.config.get("lr", self.lr)),
        )

    def load_client_model(
        self,
        model: nn.Module,
        message: RoundMessage,
        state: ClientState,
        initial_weights: Mapping[str, torch.Tensor],
    ) -> None:
        """Received arrays, then the client's personal tensors, then initial values."""
        self._load_client_weights(
            model, message, state, initial_weights, model_layout(model).tensors
        )

    @staticmethod
    def _load_client_weights(
        model: nn.Module,
        message: RoundMessage,
        state: ClientState,
        initial_weights: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
    ) -> None:
        """:meth:`load_client_model` given ``model.state_dict(keep_vars=True)``."""
        full = {}
        for key in targets:
            if key in message.arrays:
                full[key] = message.arrays[key]
            elif key in state.personal:
                full[key] = state.personal[key]
            else:
                full[key] = initial_weights[key]
        load_weights_into(model, full, targets)

    @staticmethod
    def load_optimizer_state(
        optimizer: torch.optim.Optimizer, saved: Mapping[str, Any], lr: float
    ) -> None:
        """Load a saved optimizer state (a copy: training must never modify the saved
        moments in place) and set this round's learning rate."""
        optimizer.load_state_dict(copy.deepcopy(dict(saved)))
        for group in optimizer.param_groups:
            group["lr"] = lr

    def reply_arrays(self, model: nn.Module, ctx: LocalContext) -> dict[str, torch.Tensor]:
        """The trained values of the keys the server sent (detached CPU copies)."""
        current = model.state_dict()
        return {k: current[k].detach().cpu().clone() for k in ctx.message.arrays}

    def make_optimizer(self, model: nn.Module, *, lr: float) -> torch.optim.Optimizer:
        """The local optimizer over the parameters that require gradients."""
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
        ctx: LocalContext,
        *,
        epochs: int | None = None,
    ) -> tuple[float, int]:
        """One round's local training (default: :meth:`local_loop`).

        Methods with several phases (FedRep, Ditto) override this and run each phase with
        :meth:`train_phase`. Returns the sum of per-batch losses weighted by batch size, and
        the number of examples seen.
        """
        return self.local_loop(model, optimizer, ctx, epochs=epochs)

    def local_loop(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        ctx: LocalContext,
        *,
        epochs: int | None = None,
    ) -> tuple[float, int]:
        """The mini-batch loop: epochs (or a fixed number of steps) of ``local_loss`` descent.

        ``epochs``, when given, runs exactly that many epochs instead of ``local_epochs`` /
        ``local_steps``. Returns the sum of per-batch losses weighted by batch size, and the
        number of examples seen.
        """
        loss_sum, seen, steps = 0.0, 0, 0
        max_steps = self.local_steps if epochs is None else None
        if epochs is None:
            epochs = self.local_epochs if max_steps is None else None
        elif epochs == 0:
            return loss_sum, seen
        data, device = ctx.data, ctx.device
        epoch = 0
        while True:
            for batch in iterate_batches(
                data, self.batch_size, shuffle=True, generator=ctx.generator
            ):
                batch = tuple(b.to(device) for b in batch)
                optimizer.zero_grad(set_to_none=True)
                loss = self.local_loss(model, batch, ctx)
                loss.backward()
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

    def train_phase(
        self,
        model: nn.Module,
        ctx: LocalContext,
        *,
        epochs: int,
        trainable: Callable[[str], bool] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float | None = None,
    ) -> tuple[float, int]:
        """One phase of multi-phase local work: ``epochs`` epochs of :meth:`local_loop` with
        only the parameters whose names satisfy ``trainable`` updated.

        The others are frozen for the phase (no gradient, so the optimizer leaves them) and
        unfrozen after it. ``optimizer`` defaults to a fresh :meth:`make_optimizer` over the
        trainable parameters at ``lr`` (default: this round's learning rate).
        """
        with trainable_only(model, trainable):
            if optimizer is None:
                optimizer = self.make_optimizer(model, lr=ctx.lr if lr is None else lr)
            return self.local_loop(model, optimizer, ctx, epochs=epochs)

    # ------------------------------------------------------------------ hooks
    def local_loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], ctx: LocalContext):
        """The loss minimised locally: the ``loss`` option on the model's logits."""
        x, y = batch[0], batch[1]
        return self.classification_loss(model(x), y, ctx)

    def classification_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, ctx: LocalContext
    ) -> torch.Tensor:
        """The configured classification loss with the context's prior."""
        return self._loss_fn(logits, targets, prior=ctx.prior)

    def before_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        """Hook run once per round after the weights are loaded (e.g. refresh centroids)."""

    def after_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        """Hook run once per round after the last local step."""

    def _check_state_fields(self, state: ClientState) -> None:
        unknown = sorted(set(state.method) - set(self.client_state_fields))
        if unknown:
            declared = ", ".join(map(repr, self.client_state_fields)) or "none"
            raise KeyError(
                f"{type(self).__name__}: client state entries {unknown} are not declared in "
                f"'client_state_fields' (declared: {declared})."
            )

    # ------------------------------------------------------------------ evaluation
    def eval_weights(
        self, global_weights: Mapping[str, torch.Tensor], state: GlobalState
    ) -> dict[str, torch.Tensor]:
        """The weights the *global* model is evaluated with (generalization).

        Default: the global weights themselves. CReFF swaps in its re-trained classifier.
        """
        return dict(global_weights)

    def spec_weights(
        self, global_weights: Mapping[str, torch.Tensor], state: ClientState
    ) -> dict[str, torch.Tensor]:
        """The weights client ``k`` is evaluated with for specialization (``spec_model``).

        "post_local": its model after its last local training; "global": the global model;
        "personal": :meth:`personal_weights`. A client that has never trained gets the global
        model overlaid with whatever it holds.
        """
        merged = dict(global_weights)
        if self.spec_model == "global":
            return merged
        if self.spec_model == "post_local":
            merged.update(state.post_local or state.personal)
            return merged
        return self.personal_weights(global_weights, state)

    def personal_weights(
        self, global_weights: Mapping[str, torch.Tensor], state: ClientState
    ) -> dict[str, torch.Tensor]:
        """A personalized method's own model of client ``k`` (``spec_model="personal"``):
        by default the global weights overlaid with the client's personal tensors (global body
        and own head for FedPer)."""
        merged = dict(global_weights)
        merged.update(state.personal)
        return merged

    def finetune_for_eval(self, model: nn.Module, ctx: LocalContext) -> None:
        """Adapt a client's model on its training data before specialization (default: no-op).

        ``model`` holds :meth:`spec_weights`; ``ctx`` is the client's context for the next
        round. The result is used for evaluation only, never sent nor stored (FedBABU and
        FedAvg+FT fine-tune here).
        """


def _prior(counts: np.ndarray) -> torch.Tensor:
    """``counts / max(sum, 1)`` as float32 (the prior of ``LocalContext.prior``)."""
    return torch.as_tensor(counts / max(counts.sum(), 1), dtype=torch.float32)


# dataset -> (its labels tensor, that tensor's version, num_classes, counts, prior)
_COUNTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _local_counts(data: Dataset, num_classes: int) -> tuple[np.ndarray, torch.Tensor]:
    """``n_{k,c}`` of a client's training split and its prior (new copies at every call).

    Kept per dataset while its ``labels`` tensor is the same object at the same version, so a
    client's counts are computed once, not at every round; datasets without a ``labels``
    tensor, or that cannot be weakly referenced, are counted every time.
    """
    labels = getattr(data, "labels", None)
    cacheable = isinstance(labels, torch.Tensor)
    if cacheable:
        try:
            cached = _COUNTS.get(data)
        except TypeError:  # not hashable or not weakly referenceable
            cached, cacheable = None, False
        if (
            cached is not None
            and cached[0] is labels
            and cached[1] == labels._version
            and cached[2] == num_classes
        ):
            return cached[3].copy(), cached[4].clone()
    counts = np.bincount(dataset_labels(data), minlength=num_classes)
    prior = _prior(counts)
    if cacheable:
        _COUNTS[data] = (labels, labels._version, num_classes, counts.copy(), prior.clone())
    return counts, prior


class ReceivedParams(MutableMapping):
    """``LocalContext.global_params``: the received values of the model's parameters
    (detached, on the device), gathered when first read (FedAvg never reads them)."""

    def __init__(
        self, model: nn.Module, arrays: Mapping[str, torch.Tensor], device: torch.device
    ):
        self._source: tuple | None = (model, arrays, device)
        self._values: dict[str, torch.Tensor] = {}

    def _gathered(self) -> dict[str, torch.Tensor]:
        if self._source is not None:
            model, arrays, device = self._source
            self._values = {
                name: (arrays[name].detach() if arrays[name].requires_grad else arrays[name])
                .to(device)
                for name, _ in model.named_parameters()
                if name in arrays
            }
            self._source = None
        return self._values

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._gathered()[key]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self._gathered()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._gathered()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._gathered())

    def __len__(self) -> int:
        return len(self._gathered())

    def __repr__(self) -> str:
        return f"ReceivedParams({self._gathered()!r})"


def working_copy(state: ClientState) -> ClientState:
    """The copy of a client's state that one round of local work may change: new containers
    (dicts, lists, tuples, numpy arrays copied) around the same tensors. Hooks replace
    entries; :class:`_StateGuard` reports a stored tensor modified in place."""
    return ClientState(
        personal=dict(state.personal),
        post_local=state.post_local,
        optimizer=_copy_containers(state.optimizer),
        method=_copy_containers(state.method),
    )


def _copy_containers(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        return {k: _copy_containers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy_containers(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.copy()
    return value


def _tensors_in(value: Any, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors_in(v, f"{path}[{k!r}]")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _tensors_in(v, f"{path}[{i}]")


class _StateGuard:
    """Remembers the version counters of a stored client state's tensors, so that local work
    which modifies one of them in place (an aborted round could not undo it) is reported."""

    def __init__(self, state: ClientState):
        self._seen = [
            (path, t, t._version)
            for name in ("personal", "post_local", "optimizer", "method")
            for path, t in _tensors_in(getattr(state, name), f"ClientState.{name}")
        ]

    def check(self, owner: str) -> None:
        changed = [path for path, t, version in self._seen if t._version != version]
        if changed:
            raise RuntimeError(
                f"{owner}: local training modified the stored client state in place "
                f"({', '.join(changed[:3])}); hooks must replace entries of ctx.state "
                "(e.g. ctx.state.method[name] = new_tensor), never change a stored tensor."
            )


_PLACED: weakref.WeakKeyDictionary[nn.Module, torch.device] = weakref.WeakKeyDictionary()


def move_to(model: nn.Module, device: torch.device) -> Mapping[str, torch.Tensor]:
    """``model.to(device)``, skipped when the model is already there; returns
    ``model.state_dict(keep_vars=True)`` (on ``device``, read-only)."""
    return _placed(model, device).tensors


def _placed(model: nn.Module, device: torch.device) -> ModelLayout:
    """:func:`move_to`, returning the model's :func:`~fedlib.core.layout.model_layout`.

    Every parameter and buffer is checked the first time a model is seen on ``device``;
    later, the state-dict tensors (a ``model.to`` elsewhere moves them too).
    """
    layout = model_layout(model)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if _PLACED.get(model) == device and all(t.device == device for t in layout.tensors.values()):
        return layout
    if any(t.device != device for t in model.parameters()) or any(
        t.device != device for t in model.buffers()
    ):
        model.to(device)
        layout = model_layout(model)
    _PLACED[model] = device
    return layout


_PLAIN_LOADERS = (nn.Module._load_from_state_dict, _NormBase._load_from_state_dict)


def load_weights_into(
    model: nn.Module,
    weights: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """``model.load_state_dict(weights)`` (strict), as one batched copy when nothing can
    differ from it: every key present with its shape, and no module with its own loading
    code or hooks. ``targets`` is ``model.state_dict(keep_vars=True)`` when the caller has it."""
    layout = model_layout(model)
    if targets is None:
        targets = layout.tensors
    plain = weights.keys() == targets.keys() and all(
        weights[k].shape == t.shape for k, t in targets.items()
    )
    if plain:
        for module in layout.modules(model):
            if (
                type(module)._load_from_state_dict not in _PLAIN_LOADERS
                or module._load_state_dict_pre_hooks
                or module._load_state_dict_post_hooks
            ):
                plain = False
                break
    if not plain:
        model.load_state_dict(weights)
        return
    with torch.no_grad():
        torch._foreach_copy_(list(targets.values()), [weights[k] for k in targets])


@contextmanager
def trainable_only(
    model: nn.Module, trainable: Callable[[str], bool] | None
) -> Iterator[nn.Module]:
    """Freeze the parameters whose names fail ``trainable`` (``None``: train all); unfreeze
    every parameter on exit."""
    try:
        for name, p in model.named_parameters():
            p.requires_grad_(trainable is None or bool(trainable(name)))
        yield model
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


def has_prefix(prefixes: tuple[str, ...], *, inside: bool = True) -> Callable[[str], bool]:
    """A ``trainable`` predicate: names under ``prefixes`` (``inside``) or all others."""
    return lambda name: name.startswith(prefixes) == inside


def build_model(model_fn: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model under a fixed seed, so every party gets the same initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_fn()


def clone_module(model: nn.Module) -> nn.Module:
    """A deep copy (used for frozen reference models such as MOON's previous model)."""
    return copy.deepcopy(model)
