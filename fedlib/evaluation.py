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

from typing import TYPE_CHECKING, Any

import pandas as pd

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

