"""Bitwidth searches under a budget: SDQ (stochastic, ladder of adjacent bitwidths) and the
linear-interpolation baseline.

Both minimise ``L_search = L_task + lambda_b max(0, E[b_bar] - b_target)`` (spec §4) with
``E[b_bar] = sum_l n_l E[b_l] / sum_l n_l`` (``budget="avg_bits"``) or the MAC-weighted
average ``sum_l MAC_l E[b_l] / sum_l MAC_l`` (``budget="bitops"``: BitOps
``sum_l MAC_l E[b_l] b_a`` divided by its value at one bit everywhere, so that the target is
again in bits). ``d E[b_bar] / d beta_l = n_l (b_hi - b_lo) / sum_l n_l``.

SDQ's ladder (spec §3): every ``commit_every`` steps a layer whose ``beta_l`` fell below
``commit_threshold`` moves down one rung (``b_hi <- b_lo``) and its DBP restarts at
``beta_init``; a layer on the last pair stays there. The search stops when the committed
average ``sum_l n_l b_hi,l / sum_l n_l`` meets the target, or after ``max_search_steps``. The
exported bits are ``b_hi`` if ``beta_l >= commit_threshold`` else ``b_lo``.

References
----------
Huang et al., "SDQ: Stochastic Differentiable Quantization with Mixed Precision", ICML 2022,
arXiv:2206.04459.
Yang, Jin, "FracBits: Mixed precision quantization via fractional bit-widths", AAAI 2021,
arXiv:2007.02017.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from fedlib._validation import Interval, Options
from fedlib.quant.layers import (
    DBP_ESTIMATORS,
    DBP_PARAMS,
    QuantLayer,
    check_candidates,
    quant_layers,
    set_mode,
)
from fedlib.quant.report import average_bits, count_macs
from fedlib.quant.training import (
    TrainingOptions,
    as_tensors,
    model_device,
    run_steps,
    shuffled_batches,
    task_loss,
)

__all__ = [
    "InterpolationSearch",
    "SDQSearch",
    "budget_loss",
    "commit",
    "expected_average_bits",
    "meet_budget",
]

_UNIT_OPEN = Interval(float, 0, 1, closed="neither")


def expected_average_bits(
    layers: Mapping[str, QuantLayer], weights: Mapping[str, float]
) -> torch.Tensor:
    """``E[b_bar] = sum_l w_l E[b_l] / sum_l w_l``, differentiable in the bitwidth parameters
    (``w_l``: the layers' ``n_l``, or their MACs for the BitOps budget)."""
    total = sum(weights[name] for name in layers)
    return sum(weights[name] * layer.expected_bits() for name, layer in layers.items()) / total


def budget_loss(expected_bits: torch.Tensor, target_bits: float, lambda_b: float) -> torch.Tensor:
    """``lambda_b max(0, E[b_bar] - b_target)`` (spec §4, form [O])."""
    return lambda_b * F.relu(expected_bits - target_bits)


def commit(
    layers: Mapping[str, QuantLayer], *, threshold: float = 0.5, beta_init: float = 0.75
) -> list[str]:
    """SDQ's commit rule at a check-point: every layer with ``beta < threshold`` that is not on
    the last pair moves down one rung and restarts at ``beta_init``. Returns the layers moved."""
    moved = []
    for name, layer in layers.items():
        last_rung = max(len(layer.candidates) - 2, 0)
        if float(layer.beta().detach()) < threshold and int(layer.rung) < last_rung:
            layer.rung += 1
            layer.set_beta(beta_init)
            moved.append(name)
    return moved


def meet_budget(
    strategy: Mapping[str, int],
    weights: Mapping[str, float],
    target_bits: float,
    candidates: Sequence[int],
    priority: Mapping[str, float],
) -> tuple[dict[str, int], list[str]]:
    """Lower bitwidths until ``average_bits(strategy) <= target_bits`` (when possible).

    [O] The spec leaves open what happens when ``max_search_steps`` ends a search above the
    target. Greedy, one candidate step at a time: if lowering some layer by one step meets the
    budget, lower the one that removes the fewest bits (least overshoot); otherwise lower the
    layer with the lowest ``priority`` (SDQ: its ``beta``, the search's own preference for the
    higher bitwidth; ties: most weights first). Stops when the budget holds or every layer is on
    the lowest candidate. Returns the new strategy and the layers lowered, in order (a layer
    lowered twice appears twice).
    """
    ladder = sorted(set(candidates), reverse=True)
    bits = dict(strategy)
    total = sum(weights[name] for name in bits)
    forced: list[str] = []
    while (excess := average_bits(bits, weights) - target_bits) > 1e-12:
        saving = {
            name: weights[name] * (bits[name] - next(c for c in ladder if c < bits[name])) / total
            for name in bits if bits[name] > ladder[-1]
        }
        if not saving:
            break
        enough = [name for name in saving if saving[name] >= excess - 1e-12]
        if enough:
            name = min(enough, key=lambda n: (saving[n], priority[n], n))
        else:
            name = min(saving, key=lambda n: (priority[n], -weights[n], n))
        bits[name] = next(c for c in ladder if c < bits[name])
        forced.append(name)
    return bits, forced


@dataclass
class _BitSearch(TrainingOptions):
    """What both searches share: the budget, the check-points and the weight training."""

    target_bits: float = 2.0
    candidates: tuple[int, ...] = (8, 7, 6, 5, 4, 3, 2, 1)
    budget: str = "avg_bits"
    lambda_b: float = 1.0
    bit_lr: float = 0.01
    commit_every: int = 20
    max_search_steps: int = 1000
    search_task_loss: str = "ce"
    enforce_budget: bool = True

    _constraints = {
        "target_bits": Interval(float, 1, 32),
        "budget": Options(("avg_bits", "bitops")),
        "lambda_b": Interval(float, 0, None, closed="left"),
        "bit_lr": Interval(float, 0, None, closed="neither"),
        "commit_every": Interval(int, 1, None),
        "max_search_steps": Interval(int, 1, None),
        "search_task_loss": Options(("ce", "kd")),
        "enforce_budget": Options((True, False)),
    }
    mode: ClassVar[str] = ""
    check_every_step: ClassVar[bool] = False
    """Check the stop rule after every step (else every ``commit_every`` steps)."""

    def _check_consistency(self) -> None:
        owner = type(self).__name__
        check_candidates(owner, self.candidates)
        if self.target_bits < min(self.candidates):
            raise ValueError(
                f"{owner}: 'target_bits' ({self.target_bits}) must be >= the smallest of "
                f"'candidates' {self.candidates}."
            )

    # ------------------------------------------------------------------ hooks
    def _setup(self, layers: Mapping[str, QuantLayer], generator: torch.Generator) -> None:
        raise NotImplementedError

    def _bit_parameters(self, layers: Mapping[str, QuantLayer]) -> list[nn.Parameter]:
        raise NotImplementedError

    def _before_step(self, layers: Mapping[str, QuantLayer], step: int) -> None:
        """Called before each step (SDQ: the temperature schedule)."""

    def _after_step(self, layers: Mapping[str, QuantLayer]) -> None:
        """Called after each optimiser step (projections onto the allowed range)."""

    def _checkpoint(self, layers: Mapping[str, QuantLayer]) -> float:
        """Commit what the rule commits; return the average bits that decides the stop."""
        raise NotImplementedError

    def _trace_row(self, layer: QuantLayer) -> dict[str, Any]:
        raise NotImplementedError

    def _priority(self, layer: QuantLayer) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------------ the search
    def fit(
        self,
        model: nn.Module,
        train: Dataset | tuple[torch.Tensor, torch.Tensor],
        *,
        teacher: nn.Module | None = None,
        seed: int = 0,
    ) -> _BitSearch:
        """Search the bitwidths of ``model``'s quantized layers (weights train too).

        Afterwards every quantized layer is in ``"fixed"`` mode at :attr:`strategy_`.

        Attributes set
        --------------
        strategy_ : dict
            ``{layer: bits}``, meeting ``target_bits`` when ``enforce_budget``.
        forced_ : list of str
            Layers :func:`meet_budget` lowered after the search (empty when the search met the
            budget itself).
        trace_ : pandas.DataFrame
            One row per check-point and layer: ``step``, ``layer``, ``bits`` (what would be
            exported now), ``expected_bits`` and the search's own columns.
        losses_, expected_bits_ : numpy.ndarray
            Task loss and ``E[b_bar]`` at every step.
        steps_ : int
            Steps taken.
        weights_ : dict
            The per-layer weights of the budget average (``n_l`` or MACs).
        """
        owner = type(self).__name__
        layers = quant_layers(model)
        if not layers:
            raise ValueError(f"{owner}: 'model' has no quantized layer (use quantize_model).")
        if self.search_task_loss == "kd" and teacher is None:
            raise ValueError(f"{owner}: search_task_loss 'kd' needs a 'teacher' model.")
        ladder = check_candidates(owner, self.candidates)
        for name, layer in layers.items():
            if layer.candidates != ladder:
                raise ValueError(
                    f"{owner}: layer {name!r} has candidates {layer.candidates}, the search "
                    f"{self.candidates}; build the model with the same candidates."
                )
        images, labels = as_tensors(train)
        device = model_device(model)
        torch.manual_seed(seed)
        batch_gen = torch.Generator().manual_seed(seed)
        noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
        if self.budget == "bitops":
            self.weights_ = {n: float(v) for n, v in count_macs(model, images[:1].to(device))
                             .items()}
        else:
            self.weights_ = {n: float(layer.num_weights) for n, layer in layers.items()}
        for layer in layers.values():
            layer.mode = self.mode
        self._setup(layers, noise_gen)
        if teacher is not None:
            teacher.eval()
        optimizers = [self.weight_optimizer(model),
                      torch.optim.Adam(self._bit_parameters(layers), lr=self.bit_lr)]
        losses: list[float] = []
        expected: list[float] = []
        trace = [self._rows(layers, 0)]

        def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self._before_step(layers, len(losses))
            with torch.no_grad():
                z_t = teacher(x) if self.search_task_loss == "kd" else None  # type: ignore[misc]
            task = task_loss(net(x), y, loss=self.search_task_loss, teacher_logits=z_t)
            bits = expected_average_bits(layers, self.weights_)
            losses.append(float(task.detach()))
            expected.append(float(bits.detach()))
            return task + budget_loss(bits, self.target_bits, self.lambda_b)

        def after_step(step: int, loss: float) -> bool:
            self._after_step(layers)
            due = (step + 1) % self.commit_every == 0
            if not (due or self.check_every_step):
                return False
            stop = self._checkpoint(layers) <= self.target_bits + 1e-12
            if due or stop:
                trace.append(self._rows(layers, step + 1))
            return stop

        self.steps_ = run_steps(
            model, shuffled_batches(images, labels, self.batch_size, batch_gen),
            self.max_search_steps, loss_fn, optimizers, after_step,
        )
        strategy = {name: layer.final_bits(self._threshold()) for name, layer in layers.items()}
        self.forced_: list[str] = []
        if self.enforce_budget:
            priority = {name: self._priority(layer) for name, layer in layers.items()}
            strategy, self.forced_ = meet_budget(strategy, self.weights_, self.target_bits,
                                                 self.candidates, priority)
        self.strategy_ = strategy
        self.trace_ = pd.DataFrame([row for rows in trace for row in rows])
        self.losses_ = np.asarray(losses)
        self.expected_bits_ = np.asarray(expected)
        set_mode(model, "fixed", bits=strategy)
        model.eval()
        return self

    def _threshold(self) -> float:
        return 0.5

    def _rows(self, layers: Mapping[str, QuantLayer], step: int) -> list[dict[str, Any]]:
        return [{"step": step, "layer": name, "weights": layer.num_weights,
                 "bits": layer.final_bits(self._threshold()),
                 "expected_bits": float(layer.expected_bits().detach()), **self._trace_row(layer)}
                for name, layer in layers.items()]


@dataclass
class SDQSearch(_BitSearch):
    """SDQ's strategy generation: differentiable bitwidth parameters (DBPs) choose,
    stochastically, between adjacent bitwidths of each layer under a bit budget.

    Parameters
    ----------
    target_bits : float, default 2.0
        ``b_target``, in average weight bits (or MAC-weighted bits for ``budget="bitops"``).
    candidates : tuple of int, default (8, 7, ..., 1)
        Sorted descending into the ladder ``c_1 > ... > c_M``.
    budget : {"avg_bits", "bitops"}, default "avg_bits"
    lambda_b : float, default 1.0
        [O] Budget weight (not stated in the paper).
    bit_lr : float, default 0.01
        Adam learning rate of the DBPs ``theta`` (spec: Adam, 1e-2, separate from weights).
    commit_every : int, default 20
        [O] Steps between check-points of the commit rule.
    max_search_steps : int, default 1000
        [O]
    search_task_loss : {"ce", "kd"}, default "ce"
    enforce_budget : bool, default True
        [O] Lower bitwidths with :func:`meet_budget` if the search ends above the target.
    dbp_estimator : {"gumbel_st", "bernoulli_st"}, default "gumbel_st"
        [S/O] The digest cites a Gumbel-softmax estimator.
    dbp_param : {"sigmoid", "clamp"}, default "sigmoid"
        [O] ``beta = sigmoid(theta)`` or ``clamp(theta, 0, 1)``.
    beta_init : float, default 0.75
        [O] ``beta`` of a layer arriving on a rung.
    commit_threshold : float, default 0.5
        [O]
    tau_start, tau_end : float, default 1.0, 0.1
        [O] Exponential temperature schedule over ``max_search_steps``,
        ``tau_t = tau_start (tau_end / tau_start)^(t / (T - 1))``.
    batch_size, lr, momentum, weight_decay
        Weight training during the search (see :class:`~fedlib.quant.training.TrainingOptions`).

    [O] ``search_space="chain"`` and the LSQ weight quantizer of the spec are not implemented:
    the ladder and DoReFa weights are the spec's defaults.

    Examples
    --------
    >>> model = quantize_model(teacher)                                    # doctest: +SKIP
    >>> search = SDQSearch(target_bits=2.0).fit(model, train, seed=0)      # doctest: +SKIP
    >>> search.strategy_                                                   # doctest: +SKIP
    {'body.0': 4, 'body.4': 2, 'body.8': 2, 'head': 3}
    """

    dbp_estimator: str = "gumbel_st"
    dbp_param: str = "sigmoid"
    beta_init: float = 0.75
    commit_threshold: float = 0.5
    tau_start: float = 1.0
    tau_end: float = 0.1

    _constraints = {
        "dbp_estimator": Options(DBP_ESTIMATORS),
        "dbp_param": Options(DBP_PARAMS),
        "beta_init": _UNIT_OPEN,
        "commit_threshold": _UNIT_OPEN,
        "tau_start": Interval(float, 0, None, closed="neither"),
        "tau_end": Interval(float, 0, None, closed="neither"),
    }
    mode: ClassVar[str] = "search"

    def _setup(self, layers: Mapping[str, QuantLayer], generator: torch.Generator) -> None:
        for layer in layers.values():
            layer.rung.fill_(0)
            layer.estimator = self.dbp_estimator
            layer.dbp_param = self.dbp_param
            layer.generator = generator
            layer.tau = self.tau_start
            layer.set_beta(self.beta_init)

    def _bit_parameters(self, layers: Mapping[str, QuantLayer]) -> list[nn.Parameter]:
        return [layer.theta for layer in layers.values()]

    def _before_step(self, layers: Mapping[str, QuantLayer], step: int) -> None:
        progress = step / max(self.max_search_steps - 1, 1)
        tau = self.tau_start * (self.tau_end / self.tau_start) ** progress
        for layer in layers.values():
            layer.tau = tau

    def _after_step(self, layers: Mapping[str, QuantLayer]) -> None:
        if self.dbp_param == "clamp":
            with torch.no_grad():
                for layer in layers.values():
                    layer.theta.clamp_(0, 1)

    def _checkpoint(self, layers: Mapping[str, QuantLayer]) -> float:
        commit(layers, threshold=self.commit_threshold, beta_init=self.beta_init)
        return average_bits({n: layer.pair[0] for n, layer in layers.items()}, self.weights_)

    def _trace_row(self, layer: QuantLayer) -> dict[str, Any]:
        hi, lo = layer.pair
        return {"b_hi": hi, "b_lo": lo, "beta": float(layer.beta().detach())}

    def _priority(self, layer: QuantLayer) -> float:
        return float(layer.beta().detach())

    def _threshold(self) -> float:
        return self.commit_threshold


@dataclass
class InterpolationSearch(_BitSearch):
    """Linear-interpolation mixed precision (FracBits-like baseline): a continuous bitwidth
    ``b_l in [min(candidates), max(candidates)]`` per layer, ``w_q = f Q_{lo+1} + (1 - f) Q_lo``
    (see :func:`~fedlib.quant.layers.interpolated_weight`), trained by Adam under the same
    budget with ``E[b_l] = b_l``; exported as ``round(b_l)``.

    [O] The rounded average is checked after every step and the search stops once it meets the
    target (the counterpart of SDQ's committed average; there is nothing to commit, so no
    reason to wait); ``commit_every`` only sets how often ``trace_`` records the bits. Same
    parameters as :class:`SDQSearch` without the DBP options; ``bit_lr`` is the Adam learning
    rate of ``b_l``, in bits per step at most.
    """

    mode: ClassVar[str] = "interp"
    check_every_step: ClassVar[bool] = True

    def _check_consistency(self) -> None:
        super()._check_consistency()
        ladder = sorted(self.candidates)
        if ladder != list(range(ladder[0], ladder[-1] + 1)):
            raise ValueError(
                f"InterpolationSearch: 'candidates' must be consecutive integers, got "
                f"{self.candidates}."
            )

    def _setup(self, layers: Mapping[str, QuantLayer], generator: torch.Generator) -> None:
        with torch.no_grad():
            for layer in layers.values():
                layer.interp_bits.fill_(float(max(self.candidates)))

    def _bit_parameters(self, layers: Mapping[str, QuantLayer]) -> list[nn.Parameter]:
        return [layer.interp_bits for layer in layers.values()]

    def _after_step(self, layers: Mapping[str, QuantLayer]) -> None:
        with torch.no_grad():
            for layer in layers.values():
                layer.interp_bits.clamp_(min(self.candidates), max(self.candidates))

    def _checkpoint(self, layers: Mapping[str, QuantLayer]) -> float:
        return average_bits({n: layer.final_bits() for n, layer in layers.items()},
                            self.weights_)

    def _trace_row(self, layer: QuantLayer) -> dict[str, Any]:
        return {}

    def _priority(self, layer: QuantLayer) -> float:
        return float(layer.expected_bits().detach()) - layer.final_bits()
