"""Quantize a trained model end to end, and compare SDQ with its baselines over seeds.

:func:`quantize` is the one path from a full-precision model to a quantized one (used by the
CLI and the chapter): build the quantized copy, find a strategy (SDQ search, interpolation
search, or one bitwidth everywhere), then train with that strategy from the full-precision
weights. :func:`compare` runs the chapter's table: full precision, uniform QAT at several
bitwidths, linear-interpolation mixed precision, SDQ and its ablations.

[O] Every stage-2 training starts from the full-precision weights and runs the same number of
epochs, whatever found the strategy, so that methods differ only in the strategy and the loss
(the searches' own weight updates are discarded).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from fedlib._validation import Interval, Options, check_param
from fedlib.quant.layers import quant_layers, quantize_model, set_mode
from fedlib.quant.quantizers import FULL_PRECISION_BITS
from fedlib.quant.report import model_size_bytes, quant_summary
from fedlib.quant.search import InterpolationSearch, SDQSearch, _BitSearch
from fedlib.quant.training import QuantTraining, as_tensors, evaluate, model_device

__all__ = [
    "METHODS",
    "SDQ_VARIANTS",
    "Comparison",
    "QuantizeResult",
    "compare",
    "findings",
    "per_seed",
    "quantize",
    "summarize",
]

METHODS = ("sdq", "uniform", "interp")
SDQ_VARIANTS: dict[str, dict[str, Any]] = {
    "SDQ": {"loss": "kd"},
    "SDQ w/o EBR": {"loss": "kd", "lambda_e": 0.0},
    "SDQ w/o KD": {"loss": "ce"},
    "SDQ w/o EBR, KD": {"loss": "ce", "lambda_e": 0.0},
}
"""Stage-2 options of SDQ and its ablations (on top of the shared training options)."""
BASELINE_TRAINING: dict[str, Any] = {"loss": "ce", "lambda_e": 0.0}
"""[O] Uniform QAT and interpolation MPQ train as plain quantization-aware training: labels only,
no distillation, no bin regularizer (their papers' setting). SDQ's row "w/o EBR, KD" trains the
same way, so the strategy is the only difference from them."""


@dataclass
class QuantizeResult:
    """What :func:`quantize` returns.

    Attributes
    ----------
    model : nn.Module
        The quantized model (layers in ``"fixed"`` mode, evaluation mode).
    strategy : dict
        ``{layer: bits}``.
    search : SDQSearch, InterpolationSearch or None
        The fitted search (``trace_``, ``losses_``, ``forced_``); None for ``"uniform"``.
    training : QuantTraining
        The fitted stage-2 training (``losses_``).
    """

    model: nn.Module
    strategy: dict[str, int]
    search: _BitSearch | None
    training: QuantTraining
    info: dict[str, Any] = field(default_factory=dict)


def quantize(
    teacher: nn.Module,
    train: Dataset | tuple[torch.Tensor, torch.Tensor],
    *,
    method: str = "sdq",
    bits: float = 2.0,
    seed: int = 0,
    candidates: Sequence[int] = (8, 7, 6, 5, 4, 3, 2, 1),
    binary_mode: str = "sign_mean",
    act_bits: int = FULL_PRECISION_BITS,
    quantize_first_last: bool = True,
    search: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    strategy: Mapping[str, int] | None = None,
) -> QuantizeResult:
    """Quantize a trained full-precision model.

    Parameters
    ----------
    teacher : nn.Module
        The trained full-precision model (not changed); also the distillation teacher.
    train : Dataset or (images, labels)
        Data for the search and the training.
    method : {"sdq", "uniform", "interp"}
        "sdq": :class:`~fedlib.quant.search.SDQSearch`; "interp":
        :class:`~fedlib.quant.search.InterpolationSearch`; "uniform": every layer at ``bits``.
    bits : float
        Target average bits (searches) or the bitwidth of every layer ("uniform", an int).
    seed : int
    candidates, binary_mode, act_bits, quantize_first_last
        See :func:`~fedlib.quant.layers.quantize_model`.
    search : mapping, optional
        Options of the search class (e.g. ``{"lambda_b": 2.0, "max_search_steps": 400}``);
        the training options (``batch_size``, ``lr``, ...) given in ``training`` apply to the
        search's weight updates too unless set here.
    training : mapping, optional
        Options of :class:`~fedlib.quant.training.QuantTraining` (default: SDQ's stage 2, KD +
        bin regularizer, 10 epochs).
    strategy : mapping, optional
        A strategy found before (e.g. by another run of the same search): skips the search.
    """
    owner = "quantize"
    check_param(owner, "method", method, Options(METHODS))
    check_param(owner, "seed", seed, Interval(int, 0, None))
    training = dict(training or {})
    stage2 = QuantTraining(**training)
    found: _BitSearch | None = None
    if strategy is not None:
        chosen = dict(strategy)
    elif method == "uniform":
        check_param(owner, "bits", bits, Interval(int, 1, FULL_PRECISION_BITS))
        chosen = None
    else:
        cls = SDQSearch if method == "sdq" else InterpolationSearch
        shared = {k: v for k, v in training.items()
                  if k in ("batch_size", "lr", "momentum", "weight_decay")}
        found = cls(target_bits=float(bits), candidates=tuple(candidates),
                    **{**shared, **dict(search or {})})
        searched = quantize_model(teacher, candidates=candidates, binary_mode=binary_mode,
                                  act_bits=act_bits, quantize_first_last=quantize_first_last)
        found.fit(searched, train, teacher=teacher, seed=seed)
        chosen = found.strategy_
    model = quantize_model(teacher, candidates=candidates, binary_mode=binary_mode,
                           act_bits=act_bits, quantize_first_last=quantize_first_last)
    set_mode(model, "fixed", bits=int(bits) if chosen is None else chosen)
    strategy_out = {n: int(layer.bits) for n, layer in quant_layers(model).items()}
    stage2.fit(model, train, teacher=teacher, seed=seed)
    return QuantizeResult(model, strategy_out, found, stage2,
                          info={"method": method, "bits": bits, "seed": seed})


@dataclass
class Comparison:
    """What :func:`compare` returns: one row per (method, seed) in ``table`` and the
    :class:`QuantizeResult` of each in ``results[(method, seed)]``."""

    table: pd.DataFrame
    results: dict[tuple[str, int], QuantizeResult]


def compare(
    teacher: nn.Module,
    train: Dataset | tuple[torch.Tensor, torch.Tensor],
    test: Dataset | tuple[torch.Tensor, torch.Tensor],
    *,
    target_bits: float = 2.0,
    uniform_bits: Iterable[int] = (1, 2, 4),
    seeds: Iterable[int] = (0, 1, 2),
    variants: Iterable[str] = tuple(SDQ_VARIANTS),
    interp: bool = True,
    fp_finetune: bool = True,
    search: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    **model_options: Any,
) -> Comparison:
    """Full precision, uniform QAT, interpolation MPQ, SDQ and its ablations, per seed.

    The SDQ variants (:data:`SDQ_VARIANTS`) share one SDQ search per seed and differ in the
    stage-2 loss only; the baselines train as :data:`BASELINE_TRAINING`. With ``fp_finetune``
    the full-precision model is also trained the same way ("full precision, fine-tuned"): the
    reference that separates what quantization costs from what the extra training gives.

    Returns
    -------
    Comparison
        ``table`` columns: method, seed, accuracy, balanced_accuracy, average_bits,
        size_bytes, compression_ratio, model_compression_ratio.
    """
    training = dict(training or {})
    example = as_tensors(test)[0][:1]
    rows: list[dict[str, Any]] = []
    results: dict[tuple[str, int], QuantizeResult] = {}
    variants = list(variants)
    unknown = sorted(set(variants) - set(SDQ_VARIANTS))
    if unknown:
        raise ValueError(f"compare: unknown 'variants' {unknown}; valid: {list(SDQ_VARIANTS)}.")
    fp_size = model_size_bytes(teacher)
    fp_row = {"method": "full precision", **evaluate(teacher, test),
              "average_bits": float(FULL_PRECISION_BITS), "size_bytes": fp_size,
              "compression_ratio": 1.0, "model_compression_ratio": 1.0}

    def record(label: str, seed: int, result: QuantizeResult) -> None:
        summary = quant_summary(result.model, example.to(model_device(teacher)))
        rows.append({"method": label, "seed": seed, **evaluate(result.model, test),
                     **{k: summary[k] for k in ("average_bits", "size_bytes",
                                                "compression_ratio",
                                                "model_compression_ratio")}})
        results[(label, seed)] = result

    baseline = {**training, **BASELINE_TRAINING}
    for seed in seeds:
        rows.append({**fp_row, "seed": seed})
        if fp_finetune:
            record("full precision, fine-tuned", seed, quantize(
                teacher, train, method="uniform", bits=FULL_PRECISION_BITS, seed=seed,
                training=baseline, **model_options))
        for b in uniform_bits:
            record(f"uniform {b}-bit", seed, quantize(
                teacher, train, method="uniform", bits=b, seed=seed, training=baseline,
                **model_options))
        if interp:
            record("interpolation MPQ", seed, quantize(
                teacher, train, method="interp", bits=target_bits, seed=seed, search=search,
                training=baseline, **model_options))
        strategy = None
        for label in variants:
            options = {**training, **SDQ_VARIANTS[label]}
            result = quantize(teacher, train, method="sdq", bits=target_bits, seed=seed,
                              search=search, training=options, strategy=strategy,
                              **model_options)
            if strategy is None:
                first = result
                strategy = result.strategy
            else:
                result.search = first.search
            record(label, seed, result)
    return Comparison(pd.DataFrame(rows), results)


def summarize(table: pd.DataFrame, metrics: Sequence[str] = ("accuracy", "balanced_accuracy",
                                                              "average_bits")) -> pd.DataFrame:
    """Mean and standard deviation over seeds per method (order of first appearance);
    the standard deviation is NaN with one seed."""
    grouped = table.groupby("method", sort=False)[list(metrics)]
    out = grouped.agg(["mean", "std"])
    out.insert(0, ("seeds", ""), table.groupby("method", sort=False)["seed"].nunique())
    return out


def per_seed(table: pd.DataFrame, column: str) -> dict[str, list[float]]:
    """``{method: [value of seed 0, seed 1, ...]}`` (seeds in increasing order)."""
    return {method: rows.sort_values("seed")[column].tolist()
            for method, rows in table.groupby("method", sort=False)}


def findings(table: pd.DataFrame, *, metric: str = "balanced_accuracy",
             label: str = "BAcc") -> list[str]:
    """The comparisons the SDQ chapter states, as sentences as strong as the seeds allow.

    Built on :func:`fedlib.report.compare` (paired by seed: ahead/behind only when every seed
    agrees) and :func:`fedlib.report.verdict` for the hypotheses of the spec, each stated before
    the run: H1, SDQ ahead of the lowest uniform bitwidth; H5, distillation helps (SDQ ahead of
    SDQ w/o KD); H4, the bin regularizer helps (SDQ ahead of SDQ w/o EBR). Methods missing from
    ``table`` are skipped.
    """
    from fedlib import report

    values = per_seed(table, metric)
    bits = per_seed(table, "average_bits")

    def cmp(a: str, b: str) -> report.Comparison:
        return report.compare(a, values[a], b, values[b], metric=label)

    out: list[str] = []
    if "SDQ" not in values:
        return out
    out.append(f"SDQ's strategies average {report.format_mean_spread(bits['SDQ'], 2)} weight "
               "bits.")
    uniform = sorted((m for m in values if m.startswith("uniform ")),
                     key=lambda m: bits[m][0])
    if uniform:
        lowest = uniform[0]
        out.append(f"H1 (SDQ above {lowest}): {report.verdict(cmp('SDQ', lowest), 'ahead')}")
        mean_bits = float(np.mean(bits["SDQ"]))
        nearest = min(uniform, key=lambda m: (abs(bits[m][0] - mean_bits), bits[m][0]))
        out.append(cmp("SDQ", nearest).sentence)
        if "SDQ w/o EBR, KD" in values:
            out.append("Allocation alone (both trained on labels only): "
                       + cmp("SDQ w/o EBR, KD", nearest).sentence)
    if "interpolation MPQ" in values:
        spread = report.format_mean_spread(bits["interpolation MPQ"], 2)
        out.append(f"Interpolation MPQ lands at {spread} bits; "
                   f"{cmp('SDQ', 'interpolation MPQ').sentence}")
    for ablation, name in (("SDQ w/o KD", "H5 (distillation helps)"),
                           ("SDQ w/o EBR", "H4 (the bin regularizer helps)")):
        if ablation in values:
            out.append(f"{name}: {report.verdict(cmp('SDQ', ablation), 'ahead')}")
    reference = "full precision, fine-tuned"
    if reference in values:
        out.append(cmp(reference, "full precision").sentence)
        gap = round(float(np.mean(values["SDQ"]) - np.mean(values[reference])), 3) + 0.0
        out.append(f"SDQ is {gap:+.3f} {label} from the fine-tuned full-precision model (means), "
                   f"{'within' if abs(gap) <= 0.01 else 'outside'} the one point H1 allows.")
    return out
