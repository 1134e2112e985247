"""One evaluation path: a model on a dataset, and the protocol built on it.

- :func:`evaluate`: a model's metrics on a dataset (the names of
  :func:`fedlib.metrics.classification_metrics`: ``accuracy``, ``balanced_accuracy``, ``bauc``
  and shot groups). The simulator's per-round history, the summaries below, the CLI and the
  chapters all use it, with the same metric names.
- **Generalization** (``gen_*``): the server's model on the pooled test set
  (:meth:`FederatedDataset.pooled_test`: the union of the clients' distinct test splits, or a
  shared test set once).
- **Specialization** (``spec_*``): each client's own model (``Algorithm.spec_weights``) on that
  client's own test split; the per-client values are then averaged **unweighted** over
  clients. When every client shares one test set, specialization measures each client's model
  on that shared set (``spec_test = "shared"`` in the summary).

Reference: Wicaksana, Yan, Cheng, "Federated classifier anchoring", arXiv:2305.00738 (the
generalization/specialization evaluation), and the protocol notes of the course.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import TYPE_CHECKING, Any

import pandas as pd

from fedlib.core.aggregation import weighted_average
from fedlib.core.evaluate import BASIC_METRICS, evaluate, predict, shared_test
from fedlib.data.base import dataset_labels
from fedlib.metrics import classification_metrics, client_summary

if TYPE_CHECKING:
    from fedlib.core.simulation import Simulation

__all__ = [
    "BASIC_METRICS",
    "evaluate",
    "evaluate_run",
    "generalization",
    "head_grid",
    "predict",
    "shared_test",
    "specialization",
    "specialization_table",
]

def generalization(sim: Simulation, *, shot_rule: str = "cumshare") -> dict[str, float]:
    """The global model on the pooled test set; shot groups from the global training counts."""
    data = sim.dataset
    test = data.pooled_test()
    logits = predict(
        sim.global_model(copy=False), test, batch_size=sim.eval_batch_size, device=sim.device
    )
    return classification_metrics(
        dataset_labels(test),
        logits.numpy(),
        data.num_classes,
        data.class_counts("train").sum(axis=0),
        shot_rule=shot_rule,
    )


def specialization_table(sim: Simulation) -> pd.DataFrame:
    """Per client: its own model on its own test split (accuracy, BAcc, bAUC, test size)."""
    data = sim.dataset
    rows = []
    for k in data.client_ids():
        test = data.test[k]
        if len(test) == 0:
            continue
        metrics = evaluate(
            sim.client_model(k, copy=False), test, num_classes=data.num_classes,
            device=sim.device, batch_size=sim.eval_batch_size,
        )
        rows.append({"client": k, "site": data.client_names[k], "test_size": len(test), **metrics})
    return pd.DataFrame(rows)


def specialization(sim: Simulation, *, client_mean: str = "unweighted") -> dict[str, Any]:
    """Mean and spread over clients of each client's own-model metrics on its own test split."""
    table = specialization_table(sim)
    out: dict[str, Any] = {}
    for metric in ("accuracy", "balanced_accuracy", "bauc"):
        summary = client_summary(
            table[metric].to_numpy(), table["test_size"].to_numpy(), mode=client_mean
        )
        out[metric] = summary["mean"]
        out[f"{metric}_std"] = summary["std"]
    out["test"] = "shared" if shared_test(sim.dataset) else "own"
    return out


def evaluate_run(sim: Simulation, **kwargs: Any) -> dict[str, Any]:
    """Generalization (``gen_*``) and specialization (``spec_*``) metrics in one flat dict."""
    gen = generalization(sim, **{k: v for k, v in kwargs.items() if k == "shot_rule"})
    spec = specialization(sim, **{k: v for k, v in kwargs.items() if k == "client_mean"})
    return {**{f"gen_{k}": v for k, v in gen.items()}, **{f"spec_{k}": v for k, v in spec.items()}}



def head_grid(sim: Simulation) -> pd.DataFrame:
    """Generalization and specialization for every head pairing of a two-head method.

    For a method with ``head_choices`` (FCA: server head "fed" or "per_avg", client head "per"
    or "fed"), one row per pairing with the :func:`evaluate_run` metrics and ``default``
    marking the method's own pairing. "per_avg" needs the clients' personalized heads
    averaged (``n_k``-weighted): when the method did not upload them, this evaluation takes them
    from the clients' states (the harness sees every client; a deployment would need the
    upload). Methods without ``head_choices`` give one row.
    """
    method = sim.algorithm
    choices = getattr(method, "head_choices", {})
    names = list(choices)
    combos = list(itertools.product(*choices.values())) or [()]
    saved_extra = sim.state_.extra
    if "avg_local_head" not in saved_extra and any("per_avg" in c for c in combos):
        heads = [sim.client_states_[k].personal for k in sim.dataset.client_ids()]
        sizes = [len(sim.dataset.train[k]) for k in sim.dataset.client_ids()]
        floats = [{n: t for n, t in h.items() if t.is_floating_point()} for h in heads]
        used = [(h, n) for h, n in zip(floats, sizes, strict=True) if h and n]
        if used:
            average = weighted_average([h for h, _ in used], [n for _, n in used])
            sim.state_.extra = {**saved_extra, "avg_local_head": average}
    rows = []
    try:
        for combo in combos:
            setting = dict(zip(names, combo, strict=True))
            variant = dict(setting)
            if "per_avg" in combo:
                variant["pfl_global_head"] = "avg_local"  # evaluation only: heads averaged above
            sim.algorithm = dataclasses.replace(method, **variant) if variant else method
            sim._finetuned_ = {}
            scores = evaluate_run(sim)
            default = all(getattr(method, n) == v for n, v in setting.items())
            rows.append({**setting, "default": default, **scores})
    finally:
        sim.algorithm, sim.state_.extra = method, saved_extra
        sim._finetuned_ = {}
    return pd.DataFrame(rows)
