"""Segmentation runs: the methods by name, Dice evaluation per client, and the simulator that
records it.

What a segmentation run needs beyond the classification path:

* methods: :data:`SEGMENTATION_METHODS` / :func:`get_segmentation_method` (``"fedavg"``,
  ``"local"``, ``"fedmix"``, ``"fedst"``: on a segmentation dataset the dataset says the task);
* evaluation: :func:`evaluate_segmentation` (one split), :func:`segmentation_summary` (Dice per
  client and their mean) and :func:`evaluate_segmentation_run` (the summary of a finished run,
  ``gen_*`` for the global model and ``spec_*`` for the clients' own models);
* the simulator: :class:`SegmentationSimulation` records Dice every evaluation round
  (:func:`record_segmentation_round`) instead of the classification metrics.

Per test image ``ŷ = 1[σ(z) > 0.5]`` and ``Dice = (2|ŷ ∩ y| + ε) / (|ŷ| + |y| + ε)``, ε = 1e-4,
two empty masks scoring 1 (:func:`fedlib.metrics.dice_score`); a client's score is the mean
over its test images, the federation's the unweighted mean over clients
(:func:`fedlib.metrics.client_mean`). This is how FedMix is evaluated (Wicaksana et al.,
IEEE TMI 2023, arXiv:2205.01840).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fedlib._validation import Interval, check_param
from fedlib.core.algorithm import Algorithm
from fedlib.core.simulation import Simulation
from fedlib.methods.fedmix import FedMix, SegmentationFedAvg, SegmentationLocal
from fedlib.methods.fedst import FedST
from fedlib.metrics import client_mean, dice_score
from fedlib.utils import device as default_device

__all__ = [
    "SEGMENTATION_METHODS",
    "SegmentationSimulation",
    "evaluate_segmentation_run",
    "get_segmentation_method",
    "evaluate_segmentation",
    "is_segmentation",
    "record_segmentation_round",
    "segmentation_scores",
    "segmentation_summary",
]


SEGMENTATION_METHODS: dict[str, type[Algorithm]] = {
    "fedavg": SegmentationFedAvg,
    "local": SegmentationLocal,
    "fedmix": FedMix,
    "fedst": FedST,
}
"""Segmentation methods by the name ``python -m fedlib run --method`` takes with a segmentation
dataset: FedAvg (Dice, pixel clients), local learning, FedMix, federated self-training."""


def get_segmentation_method(name: str, **params: Any) -> Algorithm:
    """Build a segmentation method by name, e.g. ``get_segmentation_method("fedmix", tau=0.8)``."""
    if name not in SEGMENTATION_METHODS:
        raise ValueError(
            f"get_segmentation_method: unknown method {name!r}; valid segmentation methods are "
            f"{', '.join(sorted(SEGMENTATION_METHODS))}."
        )
    cls = SEGMENTATION_METHODS[name]
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise TypeError(
            f"{cls.__name__}: unknown option(s) {unknown}; valid options are {known}."
        )
    return cls(**params)


def _image_mask_batches(
    owner: str, dataset: Dataset, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, true masks) in order: sliced from tensors when the dataset holds them (a test
    split of :class:`fedlib.data.SegmentationDataset`), else from its ``image``/``mask`` items."""
    images = getattr(dataset, "images", None)
    masks = getattr(dataset, "true_masks", None)
    if getattr(dataset, "reveal_mask", True) is False:
        raise ValueError(
            f"{owner}: the dataset hides its true masks (a weakly supervised training split); "
            "evaluate on a test split."
        )
    if isinstance(images, torch.Tensor) and isinstance(masks, torch.Tensor):
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size], masks[start : start + batch_size]
        return
    items = []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, dict) or "mask" not in item:
            raise ValueError(f"{owner}: dataset items must be dicts with 'image' and 'mask'.")
        items.append(item)
        if len(items) == batch_size or i == len(dataset) - 1:
            yield (torch.stack([it["image"] for it in items]),
                   torch.stack([it["mask"] for it in items]))
            items = []


@torch.no_grad()
def segmentation_scores(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> np.ndarray:
    """Per-image Dice of ``model`` (logits out) on ``dataset``, shape (N,), in dataset order."""
    owner = "segmentation_scores"
    check_param(owner, "batch_size", batch_size, Interval(int, 1, None))
    device = default_device() if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    scores = []
    try:
        for x, y in _image_mask_batches(owner, dataset, batch_size):
            logits = model(x.to(device)).float().cpu()
            scores.append(dice_score(logits, (y > 0.5).float(), reduction="none"))
    finally:
        model.train(was_training)
    return np.concatenate(scores) if scores else np.zeros(0)


def evaluate_segmentation(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Dice of ``model`` on one test split: ``{"dice": mean over images, "num_images": N}``.

    An empty split gives ``{}`` (nothing to report), as :func:`fedlib.evaluation.evaluate`
    does for classification.

    Parameters
    ----------
    model : nn.Module returning logits (N, C, H, W)
    dataset : a test split of :class:`fedlib.data.SegmentationDataset` (or any dataset whose
        items are dicts with ``image`` and ``mask``)
    batch_size : int, default 64
    device : torch.device, optional
    """
    scores = segmentation_scores(model, dataset, batch_size=batch_size, device=device)
    if scores.size == 0:
        return {}
    return {"dice": float(scores.mean()), "num_images": float(scores.size)}


def segmentation_summary(
    model_for_client: Callable[[int], nn.Module],
    federation: Any,
    *,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Dice per client and their unweighted mean, each client scored on its own test split.

    Parameters
    ----------
    model_for_client : callable ``k -> nn.Module``
        The model client ``k`` is evaluated with (the global model for FedMix, FedAvg, FedST;
        the client's own model for local learning).
    federation : FederatedDataset

    Returns
    -------
    dict with ``dice_per_client`` (client name -> Dice), ``dice_mean`` (unweighted mean over
    clients with a test split) and ``num_test_images`` (client name -> N).
    """
    per_client, sizes = {}, {}
    for k in federation.client_ids():
        scores = evaluate_segmentation(
            model_for_client(k), federation.test[k], batch_size=batch_size, device=device
        )
        if scores:
            name = federation.client_names[k]
            per_client[name] = scores["dice"]
            sizes[name] = int(scores["num_images"])
    return {
        "dice_per_client": per_client,
        "dice_mean": client_mean(list(per_client.values())) if per_client else float("nan"),
        "num_test_images": sizes,
    }


def is_segmentation(federation: Any) -> bool:
    """Whether a federation is a segmentation task (its splits carry a supervision level, as
    :func:`fedlib.data.segmentation_view` builds them)."""
    splits = list(getattr(federation, "test", {}).values())
    return bool(splits) and all(hasattr(s, "supervision") for s in splits)


def record_segmentation_round(
    sim: Simulation, record: dict[str, Any], client_rows: dict[int, dict[str, Any]]
) -> None:
    """One evaluation round of a segmentation run, in the simulator's history columns.

    Per client ``k`` (row): ``gen_dice`` of the global model on its test split and, with
    ``sim.evaluate_clients``, ``spec_dice`` of its own model (``Simulation.client_model``).
    Round record: ``gen_client_mean_dice`` and ``spec_dice``, unweighted means over clients.
    """
    data = sim.dataset
    options = dict(batch_size=min(sim.eval_batch_size, 256), device=sim.device)
    model = sim.global_model(copy=False)
    gen, spec = [], []
    for k in data.client_ids():
        scores = evaluate_segmentation(model, data.test[k], **options)
        if scores:
            client_rows.setdefault(k, {"round": record["round"], "client": k})["gen_dice"] = (
                scores["dice"]
            )
            gen.append(scores["dice"])
    record["gen_client_mean_dice"] = client_mean(gen) if gen else float("nan")
    if sim.evaluate_clients:
        for k in data.client_ids():
            scores = evaluate_segmentation(sim.client_model(k, copy=False), data.test[k], **options)
            if scores:
                row = client_rows.setdefault(k, {"round": record["round"], "client": k})
                row["spec_dice"] = scores["dice"]
                spec.append(scores["dice"])
        record["spec_dice"] = client_mean(spec) if spec else float("nan")


class SegmentationSimulation(Simulation):
    """The in-process simulator with Dice evaluation (:func:`record_segmentation_round`)
    instead of the classification metrics; training is :class:`Simulation`'s own."""

    def _evaluate(self, record: dict[str, Any], client_rows: dict[int, dict[str, Any]]) -> None:
        record_segmentation_round(self, record, client_rows)


def evaluate_segmentation_run(sim: Simulation) -> dict[str, Any]:
    """The Dice summary of a finished segmentation run (what ``summary.json`` reports).

    ``gen_dice_per_client`` / ``gen_dice``: the global model on each client's test split and
    the unweighted mean over clients; for personalized methods (local learning) also
    ``spec_dice_per_client`` / ``spec_dice`` with each client's own model.
    """
    out: dict[str, Any] = {}
    options = dict(batch_size=min(sim.eval_batch_size, 256), device=sim.device)
    glob = sim.global_model()
    summary = segmentation_summary(lambda k: glob, sim.dataset, **options)
    out["gen_dice_per_client"] = summary["dice_per_client"]
    out["gen_dice"] = summary["dice_mean"]
    if sim.evaluate_clients:
        summary = segmentation_summary(
            lambda k: sim.client_model(k, copy=False), sim.dataset, **options
        )
        out["spec_dice_per_client"] = summary["dice_per_client"]
        out["spec_dice"] = summary["dice_mean"]
    out["num_test_images"] = summary["num_test_images"]
    return out
