"""Training with a fixed quantization strategy (SDQ's stage 2, uniform QAT) and evaluation.

SDQ's stage 2 (spec §5) trains the network with its found strategy on::

    L = L_KD + lambda_E L_EBR + lambda_CE CE
    L_KD = -(1/N) sum_n sum_c softmax(z_T)_c log softmax(z_S)_c        (temperature 1)

with the full-precision model as teacher ``z_T`` (:func:`fedlib.losses.kd_loss`) and the bin
regularizer of :mod:`fedlib.quant.regularizers`. ``loss="ce"`` replaces ``L_KD`` by the
cross-entropy with the labels (the "without KD" ablation and plain quantization-aware training).

Every training loop of :mod:`fedlib.quant` (this one and the bitwidth searches) is
:func:`run_steps`.

References
----------
Huang et al., "SDQ: Stochastic Differentiable Quantization with Mixed Precision", ICML 2022,
arXiv:2206.04459.
Hinton, Vinyals, Dean, "Distilling the knowledge in a neural network", arXiv:1503.02531 (2015).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from fedlib._validation import Interval, Options, Validated
from fedlib.losses import kd_loss
from fedlib.metrics import accuracy, balanced_accuracy
from fedlib.quant.layers import quant_layers, weight_parameters
from fedlib.quant.regularizers import EBR_MODES, ebr_loss

__all__ = [
    "QuantTraining",
    "TrainingOptions",
    "as_tensors",
    "evaluate",
    "model_device",
    "predict_logits",
    "recalibrate_batchnorm",
    "run_steps",
    "shuffled_batches",
    "task_loss",
]

_NON_NEGATIVE = Interval(float, 0, None, closed="left")
_POSITIVE = Interval(float, 0, None, closed="neither")


# --------------------------------------------------------------------------- data
def as_tensors(dataset: Dataset | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``(images, labels)`` of a dataset held in memory (``ArrayDataset``) or of any dataset
    (stacked), or a pair of tensors passed through."""
    if isinstance(dataset, tuple):
        images, labels = dataset
        return images, torch.as_tensor(labels, dtype=torch.int64)
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
        return images, labels.long()
    items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    if not items:
        raise ValueError("as_tensors: the dataset is empty.")
    return torch.stack([x for x, *_ in items]), torch.as_tensor([int(y) for _, y, *_ in items])


def shuffled_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless mini-batches: one shuffled pass after another (the last partial batch of a pass
    is kept unless it has a single example, which BatchNorm cannot train on)."""
    n = labels.shape[0]
    if n == 0:
        raise ValueError("shuffled_batches: no training examples.")
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() > 1 or n == 1:
                yield images[idx], labels[idx]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def predict_logits(
    model: nn.Module, dataset: Dataset | tuple[torch.Tensor, torch.Tensor], batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, labels)`` of ``model`` (evaluation mode) on every example, on the CPU."""
    images, labels = as_tensors(dataset)
    device = model_device(model)
    was_training = model.training
    model.eval()
    outs = [model(images[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, images.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(outs), labels


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    dataset: Dataset | tuple[torch.Tensor, torch.Tensor],
    batch_size: int = 256,
) -> nn.Module:
    """Re-estimate every BatchNorm layer's running statistics on ``dataset`` (one pass, plain
    average over batches, no weight change).

    Quantized weights that flip between levels from one step to the next leave running
    statistics that describe none of the recent networks; re-estimating them after training
    removes that train/evaluation mismatch (Nagel, Fournarakis, Bondarenko, Blankevoort,
    "Overcoming oscillations in quantization-aware training", ICML 2022, arXiv:2203.11086).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    images, _ = as_tensors(dataset)
    device = model_device(model)
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the mean over the pass
    model.train()
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        if batch.shape[0] > 1:
            model(batch.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return model


def evaluate(
    model: nn.Module, dataset: Dataset | tuple[torch.Tensor, torch.Tensor]
) -> dict[str, float]:
    """Accuracy and balanced accuracy (mean recall over the classes present) on ``dataset``."""
    logits, labels = predict_logits(model, dataset)
    y, pred = labels.numpy(), logits.argmax(1).numpy()
    return {"accuracy": accuracy(y, pred), "balanced_accuracy": balanced_accuracy(y, pred)}


# --------------------------------------------------------------------------- the loop
def task_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss: str,
    teacher_logits: torch.Tensor | None = None,
    lambda_ce: float = 0.0,
) -> torch.Tensor:
    """``"kd"``: ``L_KD(z_S, z_T) + lambda_CE CE``; ``"ce"``: ``CE`` alone."""
    if loss == "ce":
        return F.cross_entropy(logits, targets)
    if teacher_logits is None:
        raise ValueError("task_loss: loss 'kd' needs the teacher's logits.")
    value = kd_loss(logits, teacher_logits)
    if lambda_ce > 0:
        value = value + lambda_ce * F.cross_entropy(logits, targets)
    return value


def run_steps(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    optimizers: list[torch.optim.Optimizer],
    after_step: Callable[[int, float], bool] | None = None,
) -> int:
    """Up to ``steps`` optimisation steps; ``after_step(step, loss)`` returning True stops early.

    Returns the number of steps taken.
    """
    device = model_device(model)
    model.train()
    for step in range(steps):
        x, y = next(batches)
        loss = loss_fn(model, x.to(device), y.to(device))
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        if after_step is not None and after_step(step, float(loss.detach())):
            return step + 1
    return steps


@dataclass
class TrainingOptions(Validated):
    """How weights are trained (shared by stage 2, uniform QAT and the bitwidth searches).

    Parameters
    ----------
    batch_size : int, default 64
    lr : float, default 0.01
        SGD learning rate of the weights (constant).
    momentum : float, default 0.9
    weight_decay : float, default 0.0
    """

    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0

    _constraints = {
        "batch_size": Interval(int, 2, None),
        "lr": _POSITIVE,
        "momentum": Interval(float, 0, 1, closed="left"),
        "weight_decay": _NON_NEGATIVE,
    }

    def weight_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(list(weight_parameters(model)), lr=self.lr,
                               momentum=self.momentum, weight_decay=self.weight_decay)

    def params(self) -> dict[str, Any]:
        """The options as a plain dict (for ``summary.json``)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class QuantTraining(TrainingOptions):
    """Train a model at its current quantization (SDQ's stage 2, or uniform QAT).

    The model's quantized layers keep their mode and bits (set them first with
    :func:`~fedlib.quant.layers.set_mode`); a model without quantized layers is simply trained,
    which is how the chapters train their full-precision teachers.

    Parameters
    ----------
    epochs : int, default 10
        Passes over the training data.
    loss : {"kd", "ce"}, default "kd"
        "kd": distil from ``teacher`` (SDQ); "ce": labels only (QAT, "without KD").
    lambda_ce : float, default 0.0
        [S/O] Weight of an extra cross-entropy term with ``loss="kd"`` (the paper does not say
        whether a hard-label term is used).
    lambda_e : float, default 0.1
        Weight of the bin regularizer (the paper's best ablation value [S]); 0 disables it.
    ebr_mode : {"br", "occupancy", "per_bin_norm", "entropy_bonus"}, default "br"
        [O] See :mod:`fedlib.quant.regularizers`.
    gamma_h : float, default 0.01
        [O] Entropy bonus weight (``ebr_mode="entropy_bonus"``).
    recalibrate_bn : bool, default True
        [O] Re-estimate BatchNorm statistics on the training data after training
        (:func:`recalibrate_batchnorm`); applied to every method alike.

    Attributes
    ----------
    losses_ : numpy.ndarray
        The training loss of every step.

    References
    ----------
    Huang et al., ICML 2022, arXiv:2206.04459 (Sec. 3.3); Han et al., ICCV 2021 (bin
    regularization).
    """

    epochs: int = 10
    loss: str = "kd"
    lambda_ce: float = 0.0
    lambda_e: float = 0.1
    ebr_mode: str = "br"
    gamma_h: float = 0.01
    recalibrate_bn: bool = True

    _constraints = {
        "epochs": Interval(int, 0, None),
        "loss": Options(("kd", "ce")),
        "lambda_ce": _NON_NEGATIVE,
        "lambda_e": _NON_NEGATIVE,
        "ebr_mode": Options(EBR_MODES),
        "gamma_h": _NON_NEGATIVE,
        "recalibrate_bn": Options((True, False)),
    }

    def fit(
        self,
        model: nn.Module,
        train: Dataset | tuple[torch.Tensor, torch.Tensor],
        *,
        teacher: nn.Module | None = None,
        seed: int = 0,
    ) -> QuantTraining:
        """Train ``model`` in place for ``epochs`` passes; returns ``self``."""
        if self.loss == "kd" and teacher is None:
            raise ValueError("QuantTraining: loss 'kd' needs a 'teacher' model.")
        images, labels = as_tensors(train)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        per_epoch = -(-labels.shape[0] // self.batch_size)
        layers = list(quant_layers(model).values())
        if teacher is not None:
            teacher.eval()
        losses: list[float] = []

        def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                z_t = teacher(x) if self.loss == "kd" else None  # type: ignore[misc]
            value = task_loss(net(x), y, loss=self.loss, teacher_logits=z_t,
                              lambda_ce=self.lambda_ce)
            if self.lambda_e > 0 and layers:
                value = value + self.lambda_e * ebr_loss(layers, self.ebr_mode,
                                                         gamma_h=self.gamma_h).to(value.device)
            return value

        run_steps(model, shuffled_batches(images, labels, self.batch_size, generator),
                  self.epochs * per_epoch, loss_fn, [self.weight_optimizer(model)],
                  after_step=lambda step, loss: losses.append(loss) and False)
        if self.recalibrate_bn:
            recalibrate_batchnorm(model, (images, labels))
        model.eval()
        self.losses_ = np.asarray(losses)
        return self
