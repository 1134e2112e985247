"""Segmentation runs: the methods by name, Dice evaluation per client, and the simulator that
records it.

What a segmentation run needs beyond the classification path:

* methods: :data:`SEGMENTATION_METHODS` / :func:`get_segmentation_method` (``"fedavg"``,
  ``"local"``, ``"fedmix"``, ``"fedst"``: on a segmentation dataset the dataset says the task);
* evaluation: :func:`evaluate_segmentation` (one split), :func:`segmentation_summary` (Dice per
  client and their mean) and :func:`evaluate_segmentation_run` (the summary of a finished run,
  ``gen_*`` for the global model and ``spec_*`` for the clients' own models);
* the simulator: :class:`SegmentationSimulation` records Dice every evaluation round
  (:func:`record_segmentation_round`) instead of the classification metrics;
* watching FedMix: :func:`run_rounds` plays a run round by round with a callback,
  :class:`PseudoLabelTrace` records the pseudo-labels and the selection each round,
  :func:`fedmix_round_table` lists the server's ``n_i``, ``ℓ_i`` and ``w_i``, and
  :func:`pseudo_label_figure` shows example pseudo-labels with a slider over rounds.

Per test image ``ŷ = 1[σ(z) > 0.5]`` and ``Dice = (2|ŷ ∩ y| + ε) / (|ŷ| + |y| + ε)``, ε = 1e-4,
two empty masks scoring 1 (:func:`fedlib.metrics.dice_score`); a client's score is the mean
over its test images, the federation's the unweighted mean over clients
(:func:`fedlib.metrics.client_mean`). This is how FedMix is evaluated (Wicaksana et al.,
IEEE TMI 2023, arXiv:2205.01840).
"""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from fedlib._validation import Interval, check_param
from fedlib.core.algorithm import Algorithm
from fedlib.core.simulation import Simulation
from fedlib.methods.fedmix import (
    ROUNDS_KEY,
    FedMix,
    SegmentationFedAvg,
    SegmentationLocal,
    supervision_of,
)
from fedlib.methods.fedst import FedST
from fedlib.metrics import client_mean, dice_score
from fedlib.segmentation_ops import agreement_dice, pseudo_label_pass
from fedlib.utils import device as default_device

__all__ = [
    "SEGMENTATION_METHODS",
    "PseudoLabelTrace",
    "SegmentationSimulation",
    "evaluate_segmentation_run",
    "fedmix_round_table",
    "get_segmentation_method",
    "evaluate_segmentation",
    "is_segmentation",
    "pseudo_label_figure",
    "record_segmentation_round",
    "run_rounds",
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


# --------------------------------------------------------------------------- watching a run


def run_rounds(sim: Simulation, callback: Callable[[Simulation], None]) -> None:
    """Play ``sim``'s remaining rounds one at a time, calling ``callback(sim)`` before the
    first and after every round (e.g. to record the pseudo-labels the next round would use).

    The rounds are exactly those of ``sim.run()`` (every random choice derives from the seed,
    the round and the client); the history gains an evaluation record after every round.
    """
    target = sim.num_rounds
    callback(sim)
    try:
        for done in range(sim.state_.round + 1, target + 1):
            sim.num_rounds = done
            sim.run()
            callback(sim)
    finally:
        sim.num_rounds = target


@dataclass
class PseudoLabelTrace:
    """FedMix's pseudo-labels on the weak clients' training images, round by round.

    Called with a :class:`~fedlib.core.Simulation` running :class:`FedMix` (e.g. by
    :func:`run_rounds`), it runs :func:`fedlib.segmentation_ops.pseudo_label_pass` with the
    current global networks on every training image of every weak client (no flips), with the
    method's own options: what the clients select in the next round, up to their random flips.

    Parameters
    ----------
    examples : dict of client id to list of int
        Images whose pseudo-labels are kept in full (for pictures).

    Attributes
    ----------
    rounds : list of int
        Rounds done at each record (0: the initial networks).
    agreement, coverage, keep : list of dict of client id to ndarray (N_k,)
        Per record: ``Dice(ŷ_1, ŷ_2)``, ``Dice(ŷ_1, B)`` (NaN for clients without boxes) and
        the selection, for every image of every weak client.
    labels : list of dict of client id to uint8 ndarray (E_k, 2, C, H, W)
        Per record: ``(ŷ_1, ŷ_2)`` of the example images.
    """

    examples: dict[int, list[int]]
    rounds: list[int] = field(default_factory=list)
    agreement: list[dict[int, np.ndarray]] = field(default_factory=list)
    coverage: list[dict[int, np.ndarray]] = field(default_factory=list)
    keep: list[dict[int, np.ndarray]] = field(default_factory=list)
    labels: list[dict[int, np.ndarray]] = field(default_factory=list)

    def __call__(self, sim: Simulation) -> None:
        method = sim.algorithm
        if not isinstance(method, FedMix):
            raise TypeError(
                f"PseudoLabelTrace: the simulation must run FedMix, got {type(method).__name__}."
            )
        model = sim.global_model(copy=False)
        agreement, coverage, keep, labels = {}, {}, {}, {}
        for k in sim.dataset.client_ids():
            data = sim.dataset.train[k]
            level = supervision_of(data)
            if level == "pixel" or len(data) == 0:
                continue
            weak = data.targets if level in ("box", "image") else None
            device = sim.device
            out = pseudo_label_pass(
                model.net1, model.net2, data.images.to(device), level,
                None if weak is None else weak.to(device), tau=method.tau,
                box_coverage_min=method.box_coverage_min, refine=method.refine,
                agree_after_refine=method.agree_after_refine,
                reject_empty=method.reject_empty_pl,
            )
            agreement[k] = out.agreement.cpu().numpy()
            keep[k] = out.keep.cpu().numpy()
            coverage[k] = (
                agreement_dice(out.y1.amax(1, keepdim=True), weak.to(device)).cpu().numpy()
                if level == "box" else np.full(len(data), np.nan)
            )
            rows = self.examples.get(k, [])
            labels[k] = torch.stack([out.y1[rows], out.y2[rows]], 1).to(torch.uint8).cpu().numpy()
        self.rounds.append(sim.state_.round)
        self.agreement.append(agreement)
        self.coverage.append(coverage)
        self.keep.append(keep)
        self.labels.append(labels)

    def kept_share(
        self, tau: float, box_coverage_min: float = 0.5
    ) -> dict[int, np.ndarray]:
        """Per weak client, the share of its images kept at each record for another ``tau``
        and coverage threshold, from the recorded Dice values (the same global networks)."""
        check_param("kept_share", "tau", tau, Interval(float, 0, 1))
        check_param("kept_share", "box_coverage_min", box_coverage_min, Interval(float, 0, 1))
        out: dict[int, list[float]] = {}
        for agreement, coverage in zip(self.agreement, self.coverage, strict=True):
            for k, values in agreement.items():
                kept = values >= tau
                boxed = ~np.isnan(coverage[k])
                kept &= ~boxed | (np.nan_to_num(coverage[k]) >= box_coverage_min)
                out.setdefault(k, []).append(float(kept.mean()))
        return {k: np.asarray(v) for k, v in out.items()}


def fedmix_round_table(sim: Simulation) -> pd.DataFrame:
    """FedMix's server log as a table: one row per (round, client) with ``n_i`` (images
    trained on), ``ℓ_i`` (net1's mean Dice loss) and the weight ``w_i`` used."""
    rows = []
    for entry in sim.state_.extra.get(ROUNDS_KEY, []):
        for client, w, n, loss in zip(entry["clients"], entry["weights"], entry["num_trained"],
                                      entry["net1_dice_loss"], strict=True):
            rows.append({"round": entry["round"], "client": sim.dataset.client_names[client],
                         "num_trained": n, "net1_dice_loss": loss, "weight": w})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- figures


def _png_data_uri(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _tile_row(image: np.ndarray, box: np.ndarray | None, y1: np.ndarray, y2: np.ndarray,
              truth: np.ndarray, gap: int) -> np.ndarray:
    """One example as three RGB tiles: the image (box edge yellow), the two pseudo-labels
    (net1 red, net2 green, both yellow), the true mask (white)."""
    h, w = image.shape
    gray = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    if box is not None:
        edge = box & ~(np.roll(box, 1, 0) & np.roll(box, -1, 0) & np.roll(box, 1, 1)
                       & np.roll(box, -1, 1))
        gray[edge] = (255, 212, 0)
    labels = np.zeros((h, w, 3), dtype=np.uint8)
    labels[..., 0] = y1 * 255
    labels[..., 1] = y2 * 255
    true = np.repeat((truth * 255).astype(np.uint8)[..., None], 3, axis=2)
    white = np.full((h, gap, 3), 255, dtype=np.uint8)
    return np.concatenate([gray, white, labels, white, true], axis=1)


def pseudo_label_figure(
    trace: PseudoLabelTrace,
    federation: Any,
    *,
    cell_px: int = 120,
) -> go.Figure:
    """The example pseudo-labels of a :class:`PseudoLabelTrace`, with a slider over rounds.

    One row per example image: the image (its box in yellow for a box client), the two
    networks' refined pseudo-labels (``ŷ_1`` red, ``ŷ_2`` green: where they agree the pixel is
    yellow) and the true mask (white; the client never sees it, it is shown for the reader).
    Each row's title gives the client, ``Dice(ŷ_1, ŷ_2)`` and whether the image was kept.
    """
    examples = [(k, i) for k, rows in trace.examples.items() for i in rows]
    if not examples or not trace.rounds:
        raise ValueError("pseudo_label_figure: the trace holds no example or no round.")
    gap = 2
    frames, titles = [], []
    for r in range(len(trace.rounds)):
        rows, texts = [], []
        for k, i in examples:
            data = federation.train[k]
            position = trace.examples[k].index(i)
            y1, y2 = trace.labels[r][k][position, :, 0]
            box = data.targets[i, 0].numpy() > 0.5 if data.supervision == "box" else None
            rows.append(_tile_row(data.images[i, 0].numpy(), box, y1, y2,
                                  data.true_masks[i, 0].numpy() > 0.5, gap))
            kept = "kept" if trace.keep[r][k][i] else "dropped"
            texts.append(f"{federation.client_names[k]} ({data.supervision}) image {i}: "
                         f"agreement {trace.agreement[r][k][i]:.2f}, {kept}")
        band = np.full((8, rows[0].shape[1], 3), 255, dtype=np.uint8)
        frames.append(np.concatenate([x for row in rows for x in (band, row)], axis=0))
        titles.append(texts)
    h, w = frames[0].shape[:2]
    tile = trace.labels[0][examples[0][0]].shape[-1]
    figure = go.Figure([
        go.Image(source=_png_data_uri(frame), visible=r == 0, hoverinfo="skip")
        for r, frame in enumerate(frames)
    ])
    row_h = tile + 8

    def annotations(texts: list[str]) -> list[dict]:
        return [{"x": 0, "y": j * row_h + 7, "xanchor": "left", "yanchor": "bottom",
                 "text": text, "showarrow": False, "font": {"size": 11},
                 "xref": "x", "yref": "y"} for j, text in enumerate(texts)]

    steps = [{"method": "update", "label": str(done),
              "args": [{"visible": [j == r for j in range(len(frames))]},
                       {"annotations": annotations(titles[r])}]}
             for r, done in enumerate(trace.rounds)]
    scale = cell_px / tile
    figure.update_xaxes(visible=False, range=[-0.5, w - 0.5], constrain="domain")
    figure.update_yaxes(visible=False, range=[h - 0.5, -0.5], scaleanchor="x",
                        constrain="domain")
    figure.update_layout(
        width=round(w * scale) + 20, height=round(h * scale) + 150,
        margin={"l": 10, "r": 10, "t": 40, "b": 90},
        annotations=annotations(titles[0]),
        title="Pseudo-labels, round by round",
        sliders=[{"active": 0, "steps": steps, "y": -0.02,
                  "currentvalue": {"prefix": "rounds done: "}}],
    )
    return figure
