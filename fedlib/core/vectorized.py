"""Train many small clients at once: ``Simulation(..., vectorize=True)``.

A round's sampled clients are trained together, a chunk of ``K`` clients at a time, with
``torch.func``:

- **Stacked parameters.** Every state-dict tensor of the ``K`` clients is stacked along a new
  first dimension, ``theta[k] = theta_k``. A *folded* copy of the model reads them (set as its
  parameters and buffers for the steps that train the whole chunk, through
  ``torch.func.functional_call`` for masked steps): its layers put the clients side by side
  along the channel dimension, so one grouped convolution (``groups = K``), one normalization
  over ``K * C`` channels, one batched matrix product per linear layer train all ``K`` clients,
  each on its own mini-batch (inputs ``(B, K * C, H, W)``, channels-last). Every folded layer
  computes exactly what the client's own layer computes on its own channels, so the ``K``
  models never mix; a probe checks this at start-up on the actual model (outputs of three
  different clients against their own forward passes) and refuses a model whose forward mixes
  channels.
- **Per-client loss.** The default softmax cross-entropy is one ``cross_entropy`` over the
  logits ``(B, C, K)`` whose ``(B, K)`` terms are averaged over each client's batch; other
  losses are mapped over the clients with ``torch.func.vmap`` (logits, labels, each client's
  prior). The sum of the ``K`` losses is differentiated once, and since client ``k``'s loss
  depends only on ``theta_k``, its gradient is client ``k``'s own. FedProx's
  ``(mu / 2) ||theta_k - w^t||^2`` is added per client.
- **Functional optimizer step.** SGD with momentum and weight decay, written as
  ``torch.optim.SGD`` computes it (``d = g + lambda theta``; ``b = d`` at the first step, then
  ``b = m b + d``; ``theta -= lr b``), on all the stacks at once (``torch._foreach_*``
  operations); ``max_grad_norm`` clips each client's gradient by its own norm.
- **Masking.** Each client draws its own mini-batches from its ``(seed, round, client)``
  generator, exactly as the sequential path. At step ``t`` only the clients that still have a
  step train (a client with fewer steps is masked out: its parameters and momentum stay as
  they are), and clients whose batch at that step has another size train in a separate group.

**Speed.** In the folded model, ``ReLU -> MaxPool2d`` becomes ``MaxPool2d -> ReLU`` (the same
values and gradients, on a quarter of the elements; see :func:`_pool_before_relu`). On Linux
with glibc, the first vectorized simulation of a process raises ``malloc``'s thresholds so that
the multi-MiB blocks a chunk's step frees are reused rather than returned to the system and
faulted back in at the next step (:func:`_reuse_freed_memory`; process-wide).

**Exactness.** The clients see the same batches, in the same order, with the same
initialisation and the same update rule as in the sequential path; only the floating-point
rounding of the batched kernels differs. ``tests/test_vectorized.py`` checks FedAvg, FedProx,
FedPer and LocalOnly against the sequential path: every weight within ``atol = 1e-5`` and
``rtol = 1e-4`` after three rounds (the largest difference seen there is about 2e-6).

**Refused**, with a message naming what to change: client hooks other than the ones listed
above (``before_local_training``, ``train_locally``, a custom ``local_loss`` ...; hooks that
run after training, ``after_local_training`` and ``reply_arrays``, are called per client on
the trained weights and are fine), Adam, ``optimizer_state="persist"``, dropout (its masks come
from the global generator), BatchNorm with ``momentum=None``, layers the folding does not know
(those with parameters or buffers; parameter-free layers are accepted when the probe passes),
tied weights (one tensor under two state-dict names), and datasets that are not in memory
(``images`` and ``labels`` tensors).
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import platform
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from fedlib.core.algorithm import (
    CLASS_COUNTS,
    Algorithm,
    LocalContext,
    _StateGuard,
    load_weights_into,
    working_copy,
)
from fedlib.core.protocol import ClientReply, ClientState
from fedlib.losses import ClassificationLoss

if TYPE_CHECKING:
    from fedlib.core.aggregation import StreamingAverage
    from fedlib.core.simulation import Simulation

__all__ = ["check_vectorizable", "fold_model", "train_round"]

CHUNK_ELEMENTS = 640_000
"""Clients per chunk: about this many input elements per step (``K * B * C * H * W``, ``B`` the
batch the clients draw: the batch size, or the largest client's size when that is smaller), at
least 1 and at most 64 clients. For 32x32 RGB images in batches of 20 this is 10 clients. On one
CPU thread (100 such clients, chunk sizes alternating round by round in one process), chunks of
10 were the fastest; chunks of 4, 6, 8, 13, 17 and 20 took 1 to 9% longer per round, and chunks
of 2 took 18% longer (the fixed cost of a step's operations is shared by fewer clients)."""

_MALLOC_THRESHOLDS = {-3: 32 * 2**20, -1: 128 * 2**20}
"""glibc ``mallopt`` settings: ``M_MMAP_THRESHOLD`` (-3) 32 MiB, ``M_TRIM_THRESHOLD`` (-1)
128 MiB (see :func:`_reuse_freed_memory`)."""
_malloc_tuned = False

_DEFAULT_HOOKS = (
    "client_update",
    "local_context",
    "load_client_model",
    "before_local_training",
    "train_locally",
    "local_loop",
    "train_phase",
    "make_optimizer",
    "load_optimizer_state",
    "classification_loss",
)


# ---------------------------------------------------------------------------- folded layers
class _FoldedConv(nn.Conv2d):
    """``nn.Conv2d`` on ``(B, K * C_in, H, W)`` with weights ``(K, C_out, C_in/g, kh, kw)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        k = w.shape[0]
        w = w.reshape(-1, *w.shape[2:])
        if x.is_contiguous(memory_format=torch.channels_last):
            w = w.contiguous(memory_format=torch.channels_last)
        bias = None if self.bias is None else self.bias.reshape(-1)
        return F.conv2d(x, w, bias, self.stride, self.padding, self.dilation, self.groups * k)


class _FoldedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over ``K * C`` channels: client ``k``'s statistics are over its own batch."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch = self.training or not self.track_running_stats
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(
            x,
            None if self.running_mean is None else self.running_mean.view(-1),
            None if self.running_var is None else self.running_var.view(-1),
            None if self.weight is None else self.weight.reshape(-1),
            None if self.bias is None else self.bias.reshape(-1),
            use_batch,
            self.momentum,
            self.eps,
        )


class _FoldedGroupNorm(nn.GroupNorm):
    """GroupNorm with ``K * G`` groups over ``K * C`` channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[1] // self.num_channels
        weight = None if self.weight is None else self.weight.reshape(-1)
        bias = None if self.bias is None else self.bias.reshape(-1)
        return F.group_norm(x, self.num_groups * k, weight, bias, self.eps)


class _FoldedLinear(nn.Linear):
    """``nn.Linear`` on ``(..., K * in)`` with weights ``(K, out, in)``: one batched product."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        k = w.shape[0]
        h = x.reshape(*x.shape[:-1], k, w.shape[2])
        y = torch.einsum("...ki,koi->...ko", h, w)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], k * w.shape[1])


_FOLDED: dict[type, type] = {
    nn.Conv2d: _FoldedConv,
    nn.BatchNorm1d: _FoldedBatchNorm,
    nn.BatchNorm2d: _FoldedBatchNorm,
    nn.GroupNorm: _FoldedGroupNorm,
    nn.Linear: _FoldedLinear,
}


def _refuse(reason: str) -> ValueError:
    return ValueError(f"Simulation: 'vectorize=True' cannot train this run exactly: {reason}.")


def fold_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose layers train ``K`` clients side by side (see the module
    notes); its state-dict names are the model's, to be given stacked tensors through
    ``torch.func.functional_call``. Raises ``ValueError`` for a layer it cannot fold."""
    folded = copy.deepcopy(model)
    for name, module in list(folded.named_modules()):
        kind = type(module)
        if kind in _FOLDED:
            if kind is nn.Conv2d and module.padding_mode != "zeros":
                raise _refuse(f"layer {name!r} pads with {module.padding_mode!r}, not zeros")
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is None:
                raise _refuse(f"layer {name!r} is a BatchNorm with momentum=None")
            module.__class__ = _FOLDED[kind]
        elif isinstance(module, nn.Sequential):
            _pool_before_relu(module)
        elif isinstance(module, nn.Dropout | nn.Dropout2d | nn.AlphaDropout) and module.p > 0:
            raise _refuse(
                f"layer {name!r} is a dropout (p={module.p}); its masks come from the global "
                "generator, which the clients would share"
            )
        else:
            own = [n for n, _ in module.named_parameters(recurse=False)]
            own += [n for n, _ in module.named_buffers(recurse=False)]
            if own:
                raise _refuse(
                    f"layer {name or 'the model'!r} ({kind.__name__}) holds tensors {own} and is "
                    "not a layer the folding knows (Conv2d, Linear, BatchNorm1d/2d, GroupNorm)"
                )
    return folded


def _pool_before_relu(sequence: nn.Sequential) -> None:
    """Swap ``ReLU -> MaxPool2d`` to ``MaxPool2d -> ReLU`` in place: the same values and
    gradients on a quarter of the elements.

    ``max`` and ``relu(v) = max(v, 0)`` commute exactly. The gradient reaches the same element:
    when a window's maximum is positive, both orders pick its first largest element; when it is
    not, ReLU's gradient is zero in both orders."""
    keys = list(sequence._modules)
    i = 0
    while i + 1 < len(keys):
        first, second = sequence._modules[keys[i]], sequence._modules[keys[i + 1]]
        if (
            type(first) is nn.ReLU
            and type(second) is nn.MaxPool2d
            and not second.return_indices
        ):
            sequence._modules[keys[i]], sequence._modules[keys[i + 1]] = second, first
            i += 2
        else:
            i += 1


def fold_inputs(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Clients' batches ``(B, C, ...)`` side by side: ``(B, K * C, ...)`` (channels-last for
    images)."""
    if xs[0].dim() == 4:
        stacked = torch.stack([x.permute(0, 2, 3, 1) for x in xs], dim=3)
        b, h, w, k, c = stacked.shape
        return stacked.reshape(b, h, w, k * c).permute(0, 3, 1, 2)
    stacked = torch.stack(xs, dim=1)
    return stacked.reshape(stacked.shape[0], -1, *stacked.shape[3:])


def _reuse_freed_memory() -> None:
    """Let glibc's ``malloc`` keep freed memory for reuse (once per process, Linux with glibc
    only; elsewhere nothing happens).

    A chunk's step allocates and frees tensors of several MiB. With glibc's default
    thresholds, such blocks are returned to the system when freed (``munmap``, or trimming the
    top of the heap) and the next step takes them back page by page: tens of thousands of page
    faults per round, a third of the round's CPU time. Raising ``M_MMAP_THRESHOLD`` to 32 MiB
    and ``M_TRIM_THRESHOLD`` to 128 MiB keeps them in the process (process-wide: this process
    then holds up to 128 MiB of freed memory instead of returning it)."""
    global _malloc_tuned
    if _malloc_tuned or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    _malloc_tuned = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    for option, value in _MALLOC_THRESHOLDS.items():
        mallopt(option, value)


# ---------------------------------------------------------------------------- checks
def _prox_mu(algorithm: Algorithm) -> float | None:
    """FedProx's mu when the method's local loss is FedProx's; ``None`` for FedAvg's loss."""
    loss = type(algorithm).local_loss
    if loss is Algorithm.local_loss:
        return None
    # FedProx's own hook, recognised by name (the core never imports the methods)
    if (loss.__module__, loss.__qualname__) == ("fedlib.methods.fedprox", "FedProx.local_loss"):
        return float(algorithm.mu)
    raise _refuse(
        f"{type(algorithm).__name__} overrides 'local_loss' (only FedAvg's and FedProx's "
        "losses are vectorized); use the sequential path"
    )


def check_vectorizable(algorithm: Algorithm, model: nn.Module, sample: Any = None) -> None:
    """Raise ``ValueError`` (what to change) unless the vectorized path trains ``algorithm``
    on ``model`` exactly; ``sample``, one input example, enables the folding probe."""
    owner = type(algorithm).__name__
    changed = [h for h in _DEFAULT_HOOKS if getattr(type(algorithm), h) is not getattr(
        Algorithm, h)]
    if changed:
        raise _refuse(f"{owner} overrides the client hooks {changed}")
    _prox_mu(algorithm)
    if algorithm.optimizer != "sgd":
        raise _refuse(f"{owner} uses optimizer={algorithm.optimizer!r} (only 'sgd' is vectorized)")
    if algorithm.optimizer_state != "reset":
        raise _refuse(f"{owner} uses optimizer_state={algorithm.optimizer_state!r}; "
                      "only 'reset' is vectorized")
    holders: dict[int, str] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        first = holders.setdefault(id(tensor), name)
        if first != name:
            raise _refuse(
                f"the model's {first!r} and {name!r} are one tensor (tied weights); each "
                "state-dict entry is stacked and trained on its own"
            )
    folded = fold_model(model)
    if sample is not None:
        _probe(model, folded, sample)


def _probe(model: nn.Module, folded: nn.Module, sample: torch.Tensor) -> None:
    """Three clients with different weights: the folded forward must give each client's own
    outputs (train mode, on copies)."""
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    base = {k: v.detach() for k, v in model.state_dict().items()}
    clients = []
    for _ in range(3):
        clients.append({
            k: v + 0.05 * torch.randn(v.shape, generator=generator).to(v) if v.is_floating_point()
            else v.clone()
            for k, v in base.items()
        })
    x = (torch.rand((3, 4, *sample.shape), generator=generator) * 2 - 0.5).to(device)
    reference = copy.deepcopy(model).train()
    expected = []
    for k in range(3):
        reference.load_state_dict(clients[k])
        with torch.no_grad():
            expected.append(reference(x[k]))
    stacks = {k: torch.stack([c[k] for c in clients]) for k in base}
    folded.train()
    try:
        with torch.no_grad():
            out = functional_call(folded, stacks, (fold_inputs(list(x)),))
    except RuntimeError as exc:
        raise _refuse(
            f"the folded model fails ({exc}); its forward mixes the clients' channels"
        ) from exc
    if out.dim() != 2 or out.shape[1] != 3 * expected[0].shape[1]:
        raise _refuse(
            f"the model's output has shape {tuple(expected[0].shape)} per client but the folded "
            f"model gives {tuple(out.shape)} for 3 clients; its forward mixes the clients' "
            "channels"
        )
    got = out.view(out.shape[0], 3, -1)
    for k in range(3):
        if not torch.allclose(got[:, k], expected[k], rtol=1e-4, atol=1e-5):
            raise _refuse(
                "the folded model's outputs differ from each client's own forward pass (its "
                "forward mixes the clients' channels, e.g. a reduction over channels)"
            )


# ---------------------------------------------------------------------------- one round
@dataclasses.dataclass
class _Client:
    client_id: int
    seed: int
    old: ClientState
    ctx: LocalContext
    guard: _StateGuard
    weights: dict[str, torch.Tensor]
    plan: list[torch.Tensor]
    loss_sum: float = 0.0
    seen: int = 0


class _Vectorizer:
    """The folded model and settings of one simulation, built once."""

    def __init__(self, sim: Simulation):
        self.sim = sim
        self.algorithm = sim.algorithm
        first = next(k for k in sim.dataset.client_ids() if k in sim._trainable)
        data = sim.dataset.train[first]
        self._require_tensors(data, first)
        check_vectorizable(sim.algorithm, sim.model_, data.images[0].to(sim.device))
        self.folded = fold_model(sim.model_).to(sim.device).train()
        self.mu = _prox_mu(sim.algorithm)
        # the largest batch a client draws: clients smaller than a batch train on all they hold
        rows = min(sim.algorithm.batch_size,
                   max(len(sim.dataset.train[k]) for k in sim._trainable))
        self.chunk = int(min(64, max(1, CHUNK_ELEMENTS // max(1, rows * data.images[0].numel()))))
        self.param_names = [n for n, _ in sim.model_.named_parameters()]
        self.slots: dict[str, tuple[nn.Module, str, bool]] = {}
        for key in sim.initial_weights_:
            path, _, attribute = key.rpartition(".")
            module = self.folded.get_submodule(path)
            self.slots[key] = (module, attribute, attribute in module._parameters)
        loss = getattr(sim.algorithm, "_loss_fn", None)
        self.plain_ce = isinstance(loss, ClassificationLoss) and loss.name == "ce"
        if sim.device.type == "cpu":
            _reuse_freed_memory()

    @staticmethod
    def _require_tensors(data: Any, client_id: int) -> None:
        if not (
            isinstance(getattr(data, "images", None), torch.Tensor)
            and isinstance(getattr(data, "labels", None), torch.Tensor)
        ):
            raise _refuse(
                f"client {client_id}'s training data is a {type(data).__name__} without "
                "'images' and 'labels' tensors (the vectorized path slices in-memory tensors)"
            )

    # ------------------------------------------------------------------ set-up
    def _plan(self, n: int, generator: torch.Generator) -> list[torch.Tensor]:
        """The mini-batch indices ``local_loop`` draws (epochs, or cycling to local_steps)."""
        alg = self.algorithm
        max_steps = alg.local_steps
        epochs = alg.local_epochs if max_steps is None else None
        plan: list[torch.Tensor] = []
        epoch = 0
        while True:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, alg.batch_size):
                plan.append(order[start : start + alg.batch_size])
                if max_steps is not None and len(plan) >= max_steps:
                    return plan
            epoch += 1
            if (epochs is not None and epoch >= epochs) or n == 0:
                return plan

    def _client(self, round_: int, client_id: int) -> _Client:
        sim, alg = self.sim, self.algorithm
        data = sim.dataset.train[client_id]
        self._require_tensors(data, client_id)
        seed = sim._client_seed(round_, client_id)
        generator = torch.Generator().manual_seed(seed)
        old = sim.client_states_[client_id]
        guard = _StateGuard(old)
        state = working_copy(old)
        message = alg.message_for(sim.state_, client_id)
        ctx = alg.local_context(
            sim.model_, message, state, data, client_id=client_id,
            num_classes=sim.dataset.num_classes, generator=generator, device=sim.device,
        )
        weights = {}
        for key in sim.initial_weights_:
            if key in message.arrays:
                weights[key] = message.arrays[key]
            elif key in state.personal:
                weights[key] = state.personal[key]
            else:
                weights[key] = sim.initial_weights_[key]
        plan = self._plan(len(data), generator)
        return _Client(client_id, seed, old, ctx, guard, weights, plan)

    # ------------------------------------------------------------------ training
    def _bind(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Make the folded model read ``tensors`` (stacked state-dict entries) directly, for
        the steps that train the whole chunk (cheaper than ``functional_call`` at every step;
        BatchNorm's running statistics are then updated in the stacks)."""
        for key, tensor in tensors.items():
            module, attribute, is_parameter = self.slots[key]
            (module._parameters if is_parameter else module._buffers)[attribute] = tensor

    def train(self, clients: list[_Client]) -> dict[str, torch.Tensor]:
        """Train a chunk of clients together; returns the stacked trained state dict."""
        device = self.sim.device
        stacks = {
            k: torch.stack([c.weights[k] for c in clients]).to(device) for k in self.slots
        }
        params = {n: stacks[n].requires_grad_(True) for n in self.param_names}
        self._bind(stacks)
        momentum: dict[str, torch.Tensor] = {}
        anchors = None
        if self.mu:
            anchors = {
                n: torch.stack([c.ctx.global_params[n] for c in clients]).to(device)
                for n in self.param_names if n in clients[0].ctx.global_params
            }
        priors = None if self.plain_ce else torch.stack([c.ctx.prior for c in clients])
        if len({c.ctx.lr for c in clients}) > 1:
            raise _refuse("the clients of a chunk have different learning rates")
        steps = max(len(c.plan) for c in clients)
        for t in range(steps):
            groups: dict[int, list[int]] = {}
            for i, c in enumerate(clients):
                if t < len(c.plan):
                    groups.setdefault(len(c.plan[t]), []).append(i)
            for members in groups.values():
                self._step(clients, members, t, stacks, params, momentum, anchors, priors)
        return {k: v.detach() for k, v in stacks.items()}

    def _step(self, clients, members, t, stacks, params, momentum, anchors, priors) -> None:
        """One local step of the clients ``members`` (indices into ``clients``), whose batches
        at step ``t`` have one size; the others are masked: their stacks stay as they are."""
        alg, device = self.algorithm, self.sim.device
        whole = len(members) == len(clients)
        index = None if whole else torch.tensor(members, device=device)

        def pick(v: torch.Tensor) -> torch.Tensor:
            return v if index is None else v.index_select(0, index)

        images, labels = [], []
        for i in members:
            data, rows = clients[i].ctx.data, clients[i].plan[t]
            images.append(data.images.index_select(0, rows).to(device))
            labels.append(data.labels.index_select(0, rows).to(device))
        x = fold_inputs(images)
        y = torch.stack(labels, dim=1)
        if whole:
            leaves = params
            out = self.folded(x)
        else:
            leaves = {n: pick(p.detach()).requires_grad_(True) for n, p in params.items()}
            tensors = {k: leaves[k] if k in leaves else pick(v) for k, v in stacks.items()}
            out = functional_call(self.folded, tensors, (x,))
        logits = out.view(out.shape[0], len(members), -1)
        if self.plain_ce:
            # softmax cross-entropy of each client's own batch: the mean over b of (B, K)
            losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(0)
        else:
            losses = vmap(
                lambda z, target, p: alg.classification_loss(z, target, _Prior(p)),
                in_dims=(1, 1, 0),
            )(logits, y, pick(priors))
        total = losses
        if anchors is not None:
            prox = torch.stack([
                (leaves[n] - pick(a)).pow(2).flatten(1).sum(1) for n, a in anchors.items()
            ]).sum(0)
            total = losses + 0.5 * self.mu * prox
        names = list(leaves)
        weights = [leaves[n] for n in names]
        grads = list(torch.autograd.grad(total.sum(), weights))
        n = x.shape[0]
        with torch.no_grad():
            for i, value in zip(members, total.tolist(), strict=True):
                clients[i].loss_sum += value * n
                clients[i].seen += n
            if alg.max_grad_norm is not None:
                norms = torch.stack([g.flatten(1).norm(2, dim=1) for g in grads])
                total_norm = norms.norm(2, dim=0)
                coef = (alg.max_grad_norm / (total_norm + 1e-6)).clamp(max=1.0)
                for g in grads:
                    g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))
            # torch.optim.SGD's update, every tensor of every client at once:
            # d = g + lambda theta; b = d (first step), b = m b + d; theta -= lr b
            if alg.weight_decay != 0:
                torch._foreach_add_(grads, weights, alpha=alg.weight_decay)
            if alg.momentum != 0:
                if t == 0:
                    buffers = grads  # fresh tensors of this step: b = d needs no copy
                else:
                    buffers = [pick(momentum[name]) for name in names]
                    torch._foreach_mul_(buffers, alg.momentum)
                    torch._foreach_add_(buffers, grads)
                for name, buffer in zip(names, buffers, strict=True):
                    if whole:
                        momentum[name] = buffer
                    else:
                        momentum.setdefault(name, torch.zeros_like(params[name]))
                        momentum[name].index_copy_(0, index, buffer)
                grads = buffers
            torch._foreach_add_(weights, grads, alpha=-clients[members[0]].ctx.lr)
            if not whole:
                for name in names:
                    params[name].index_copy_(0, index, leaves[name])
                for k, v in tensors.items():
                    if k not in leaves:
                        stacks[k].index_copy_(0, index, v)

    # ------------------------------------------------------------------ results
    def replies_are_trained_weights(self, clients: list[_Client]) -> bool:
        """Whether the clients' replies are their trained weights of one set of keys (the
        default ``after_local_training`` and ``reply_arrays``), so that they can be averaged
        straight from the stacks."""
        kind = type(self.algorithm)
        keys = list(clients[0].ctx.message.arrays)
        return (
            kind.after_local_training is Algorithm.after_local_training
            and kind.reply_arrays is Algorithm.reply_arrays
            and all(list(c.ctx.message.arrays) == keys for c in clients)
        )

    def finite(self, clients: list[_Client], trained: Mapping[str, torch.Tensor]) -> list[bool]:
        """Per client, whether its trained values of the keys it sends are finite (one check
        over the chunk's sent values side by side); empty when the replies are not those
        values."""
        if not self.replies_are_trained_weights(clients):
            return []
        rows = [
            trained[k].flatten(1)
            for k in clients[0].ctx.message.arrays
            if trained[k].is_floating_point() and trained[k][0].numel()
        ]
        if not rows:
            return [True] * len(clients)
        return torch.isfinite(torch.cat(rows, dim=1)).all(1).tolist()

    def finish(
        self,
        client: _Client,
        columns: Mapping[str, Sequence[torch.Tensor]],
        i: int,
        keep_post_local: bool,
    ) -> tuple[ClientReply, ClientState]:
        """Client ``i``'s reply and new state from the trained stacks, given as ``columns``
        (each stack unbound into its clients' tensors; the sequential path's
        ``_finish_local_work``; hooks that run after training see the trained model)."""
        alg, ctx = self.algorithm, client.ctx
        weights = {k: v[i] for k, v in columns.items()}
        num_examples = len(self.sim.dataset.train[client.client_id])
        kind = type(alg)
        if (
            kind.after_local_training is not Algorithm.after_local_training
            or kind.reply_arrays is not Algorithm.reply_arrays
        ):
            model = self.sim.model_
            load_weights_into(model, weights)
            model.train()
            alg.after_local_training(model, ctx)
            return alg._finish_local_work(
                model, ctx, client.guard, client.loss_sum, client.seen,
                num_examples=num_examples, keep_post_local=keep_post_local,
            )
        state = ctx.state
        sent = ctx.message.arrays
        state.personal = {k: v.cpu().clone() for k, v in weights.items() if k not in sent}
        state.post_local = (
            {k: v.cpu().clone() for k, v in weights.items()} if keep_post_local else None
        )
        alg._check_state_fields(state)
        client.guard.check(kind.__name__)
        if alg.wants_class_counts():
            ctx.side[CLASS_COUNTS] = torch.as_tensor(ctx.class_counts, dtype=torch.float64)
        reply = ClientReply(
            client_id=client.client_id,
            arrays={k: weights[k].cpu() for k in sent},
            num_examples=num_examples,
            side=dict(ctx.side),
            metrics={"train_loss": client.loss_sum / max(client.seen, 1), **ctx.metrics},
        )
        return reply, state


class _Prior:
    """The one context field the classification loss reads, per client under ``vmap``."""

    def __init__(self, prior: torch.Tensor):
        self.prior = prior


def train_round(
    sim: Simulation, round_: int, selected: list[int], stream: StreamingAverage | None = None
) -> Iterator[tuple[int, tuple[ClientReply, ClientState, ClientState] | None, bool]]:
    """The round's clients trained a chunk at a time: ``(client, (reply, new state, old
    state), streamed)`` in order, or ``None`` for a client that failed and is skipped (the
    simulator's ``on_client_error``). With ``stream``, a chunk's arrays are added to it at once
    from the stacks (``streamed`` is then true) when the replies are the trained weights. A
    chunk whose joint training fails is retrained client by client on the sequential path, so
    errors name their client."""
    vectorizer = getattr(sim, "_vectorizer", None)
    if vectorizer is None or vectorizer.algorithm is not sim.algorithm:
        vectorizer = sim._vectorizer = _Vectorizer(sim)
    keep = sim._keeps_post_local()
    for start in range(0, len(selected), vectorizer.chunk):
        chunk = selected[start : start + vectorizer.chunk]
        try:
            clients = [vectorizer._client(round_, k) for k in chunk]
            trained = vectorizer.train(clients)
        except Exception as exc:  # noqa: BLE001 - retried one by one, where errors name clients
            warnings.warn(
                f"Simulation: training clients {chunk[0]}..{chunk[-1]} of round {round_ + 1} "
                f"together failed ({type(exc).__name__}: {exc}); they are trained one by one.",
                stacklevel=3,
            )
            for client_id in chunk:
                # streamed=False: the simulator adds (and tests) the arrays as it files them
                yield client_id, sim._guarded(round_, client_id, keep, stream is not None), False
            continue
        finite = vectorizer.finite(clients, trained)
        columns = {k: v.unbind(0) for k, v in trained.items()}
        outcomes: list[tuple[ClientReply, ClientState, ClientState] | None] = []
        for i, client in enumerate(clients):
            try:
                reply, state = vectorizer.finish(client, columns, i, keep)
                sim._check_finite(reply, arrays_finite=finite[i] if finite else None)
                outcomes.append((reply, state, client.old))
            except Exception as exc:  # noqa: BLE001 - any client failure is handled by policy
                sim._client_failed(round_, client.client_id, exc)
                outcomes.append(None)
        streamed = stream is not None and vectorizer.replies_are_trained_weights(clients)
        if streamed:
            rows = [i for i, outcome in enumerate(outcomes) if outcome is not None]
            sent = list(clients[0].ctx.message.arrays)
            if len(rows) == len(clients):
                stream.add_stacked(
                    [c.client_id for c in clients], {k: trained[k].cpu() for k in sent}
                )
            elif rows:
                index = torch.tensor(rows, device=next(iter(trained.values())).device)
                stream.add_stacked(
                    [clients[i].client_id for i in rows],
                    {k: trained[k].index_select(0, index).cpu() for k in sent},
                )
        for client, outcome in zip(clients, outcomes, strict=True):
            yield client.client_id, outcome, streamed
    if selected:
        # the global generator as the sequential path leaves it (seeded for the last client)
        sim._seed_global(sim._client_seed(round_, selected[-1]))
