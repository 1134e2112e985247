"""The evaluation protocol: generalization and specialization of a finished run.

- **Generalization**: the server's model on the pooled test set (union of the clients' test
  splits), summarised by accuracy, balanced accuracy, bAUC and shot-group accuracies.
- **Specialization**: each client's own model (``Algorithm.personal_weights``: the global
  model for FedAvg-like methods, global body + own head for FedPer, ...) on that client's
  own test split; the per-client values are then averaged **unweighted** over clients.

Reference: Wicaksana, Yan, Cheng, "Federated classifier anchoring", arXiv:2305.00738 (the
generalization/specialization evaluation), and the protocol notes of the course.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from fedlib.core.simulation import Simulation, predict
from fedlib.data.base import dataset_labels
from fedlib.metrics import classification_metrics, client_summary


def _pooled_logits(sim: Simulation, model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    ys, outs = [], []
    for k in sim.dataset.client_ids():
        test = sim.dataset.test[k]
        if len(test) == 0:
            continue
        ys.append(dataset_labels(test))
        outs.append(predict(model, test, batch_size=sim.eval_batch_size, device=sim.device))
    return np.concatenate(ys), torch.cat(outs).numpy()


def generalization(sim: Simulation, *, shot_rule: str = "cumshare") -> dict[str, float]:
    """The global model on the pooled test set; shot groups from the global training counts."""
    y, logits = _pooled_logits(sim, sim.global_model())
    train_counts = sim.dataset.class_counts("train").sum(axis=0)
    return classification_metrics(
        y, logits, sim.dataset.num_classes, train_counts, shot_rule=shot_rule
    )


def specialization_table(sim: Simulation) -> pd.DataFrame:
    """Per client: its own model on its own test split (accuracy, BAcc, bAUC, test size)."""
    rows = []
    for k in sim.dataset.client_ids():
        test = sim.dataset.test[k]
        if len(test) == 0:
            continue
        model = sim.client_model(k)
        logits = predict(model, test, batch_size=sim.eval_batch_size, device=sim.device)
        metrics = classification_metrics(
            dataset_labels(test), logits.numpy(), sim.dataset.num_classes
        )
        rows.append(
            {"client": k, "site": sim.dataset.client_names[k], "test_size": len(test), **metrics}
        )
    return pd.DataFrame(rows)


def specialization(sim: Simulation, *, client_mean: str = "unweighted") -> dict[str, float]:
    """Mean and spread over clients of each client's own-model metrics on its own test split."""
    table = specialization_table(sim)
    out: dict[str, float] = {}
    for metric in ("accuracy", "balanced_accuracy", "bauc"):
        summary = client_summary(
            table[metric].to_numpy(), table["test_size"].to_numpy(), mode=client_mean
        )
        out[metric] = summary["mean"]
        out[f"{metric}_std"] = summary["std"]
    return out


def evaluate_run(sim: Simulation, **kwargs: Any) -> dict[str, float]:
    """Generalization (``gen_*``) and specialization (``spec_*``) metrics in one flat dict."""
    gen = generalization(sim, **{k: v for k, v in kwargs.items() if k == "shot_rule"})
    spec = specialization(sim, **{k: v for k, v in kwargs.items() if k == "client_mean"})
    return {**{f"gen_{k}": v for k, v in gen.items()}, **{f"spec_{k}": v for k, v in spec.items()}}
