"""Score a model on a dataset: the one evaluation path of the simulator, the run summaries
(:mod:`fedlib.evaluation`), the CLI and the chapters. Metric names are those of
:func:`fedlib.metrics.classification_metrics`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from fedlib.core.batches import iterate_batches
from fedlib.data.base import FederatedDataset, dataset_labels
from fedlib.metrics import accuracy, balanced_accuracy, classification_metrics

BASIC_METRICS = ("accuracy", "balanced_accuracy")
"""What the simulator records every evaluation round (cheap); summaries add ``bauc`` etc."""


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Logits of ``model`` on every example of ``dataset`` (eval mode), shape (N, C), on CPU."""
    if device is None:
        device = next(model.parameters()).device
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


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    num_classes: int,
    device: torch.device | None = None,
    batch_size: int = 1024,
    train_counts: Any = None,
    metrics: str = "full",
) -> dict[str, float]:
    """Predict with ``model`` on ``dataset`` and score the predictions.

    Parameters
    ----------
    model : nn.Module
    dataset : Dataset of ``(x, y)``
    num_classes : int
    device : torch.device, optional
        Default: the model's device.
    batch_size : int, default 1024
    train_counts : (C,) training counts, optional
        Adds the many/medium/few-shot accuracies (``metrics="full"``).
    metrics : {"full", "basic"}, default "full"
        "basic": ``accuracy`` and ``balanced_accuracy`` only (what the simulator records per
        round); "full": :func:`fedlib.metrics.classification_metrics`.

    Returns
    -------
    dict of metric name to value; empty when ``dataset`` is empty.
    """
    if metrics not in ("full", "basic"):
        raise ValueError(f"evaluate: 'metrics' must be 'full' or 'basic', got {metrics!r}.")
    y = dataset_labels(dataset)
    if len(y) == 0:
        return {}
    logits = predict(model, dataset, batch_size=batch_size, device=device)
    if metrics == "basic":
        pred = logits.argmax(1).numpy()
        return {"accuracy": accuracy(y, pred), "balanced_accuracy": balanced_accuracy(y, pred)}
    return classification_metrics(y, logits.numpy(), num_classes, train_counts)


def shared_test(dataset: FederatedDataset) -> bool:
    """Whether every client's test split is one and the same set."""
    splits = [dataset.test[k] for k in dataset.client_ids()]
    return len(splits) > 1 and all(s is splits[0] for s in splits)
