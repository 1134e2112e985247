"""Evaluation metrics: balanced accuracy, bAUC, shot groups, client means, Dice.

NumPy arrays in, Python floats (or NumPy arrays) out; torch tensors are accepted anywhere an
array is (they are detached and moved to the CPU). The accuracy family is vectorised with
``bincount``, so it stays cheap when called every round on a few thousand predictions.

Conventions (``evaluation.md`` §3): balanced accuracy and bAUC average over the classes
**present in** ``y_true`` only; a metric that is undefined on its input returns NaN rather than
raising, so that client means can skip it and report how many clients were skipped. The ROC
curves and their areas are scikit-learn's (``roc_curve``, ``roc_auc_score``), called only on
inputs where they are defined, behind these conventions.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fedlib._validation import AnyOf, Interval, Options, check_param

__all__ = [
    "SHOT_GROUPS",
    "accuracy",
    "balanced_accuracy",
    "balanced_auc",
    "classification_metrics",
    "client_mean",
    "client_summary",
    "confusion_matrix",
    "dice_score",
    "per_class_recall",
    "shot_accuracy",
    "shot_groups",
    "softmax",
]

SHOT_GROUPS = ("many", "medium", "few")
"""Names of the shot groups, from the most to the least frequent training classes."""

_GRID_POINTS = 1000


# --------------------------------------------------------------------------- conversion, checks


def _as_array(owner: str, name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype != torch.float64:
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Sequence) and not isinstance(value, str):
        return np.asarray(value)
    raise TypeError(
        f"{owner}: {name!r} must be a numpy array, torch tensor or sequence, "
        f"got {type(value).__name__}."
    )


def _labels(owner: str, name: str, value: Any) -> np.ndarray:
    array = _as_array(owner, name, value)
    if array.size == 0 and array.ndim == 1:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{owner}: {name!r} must hold integer class indices, got dtype {array.dtype}."
        )
    if array.ndim != 1:
        raise ValueError(f"{owner}: {name!r} must be 1-D (samples,), got shape {array.shape}.")
    if array.size and array.min() < 0:
        raise ValueError(
            f"{owner}: {name!r} must hold class indices >= 0, got {int(array.min())}."
        )
    return array.astype(np.int64, copy=False)


def _label_pair(owner: str, y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    true = _labels(owner, "y_true", y_true)
    pred = _labels(owner, "y_pred", y_pred)
    if pred.shape != true.shape:
        raise ValueError(
            f"{owner}: 'y_pred' must have the shape of 'y_true' {true.shape}, got {pred.shape}."
        )
    return true, pred


def _check_num_classes(owner: str, num_classes: Any, *labels: np.ndarray) -> int:
    check_param(owner, "num_classes", num_classes, Interval(int, 1, None, closed="left"))
    for array in labels:
        if array.size and array.max() >= num_classes:
            raise ValueError(
                f"{owner}: class indices must be < 'num_classes' = {num_classes}, "
                f"got {int(array.max())}."
            )
    return int(num_classes)


def _infer_num_classes(*labels: np.ndarray) -> int:
    return max((int(a.max()) + 1 for a in labels if a.size), default=1)


# --------------------------------------------------------------------------- accuracy family


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of correct predictions, ``(1/N) Σ_i 1[ŷ_i = y_i]``; NaN when N = 0."""
    true, pred = _label_pair("accuracy", y_true, y_pred)
    if true.size == 0:
        return float("nan")
    return float(np.mean(true == pred))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts ``M[i, j]`` of samples of true class i predicted as j, shape (C, C), int64."""
    owner = "confusion_matrix"
    true, pred = _label_pair(owner, y_true, y_pred)
    num_classes = _check_num_classes(owner, num_classes, true, pred)
    flat = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _recalls(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    support = np.bincount(true, minlength=num_classes)
    hits = np.bincount(true[true == pred], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, hits / np.maximum(support, 1), np.nan)


def per_class_recall(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Recall of every class, ``recall_c = |{i: y_i = c, ŷ_i = c}| / |{i: y_i = c}|``.

    Returns a float array of shape (C,), NaN for classes absent from ``y_true``.
    """
    owner = "per_class_recall"
    true, pred = _label_pair(owner, y_true, y_pred)
    num_classes = _check_num_classes(owner, num_classes, true, pred)
    return _recalls(true, pred, num_classes)


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Balanced accuracy: mean recall over the classes present in ``y_true``.

    ``BAcc = (1/|P|) Σ_{c∈P} recall_c``, P = classes present in ``y_true``. A class that is only
    predicted never enters P. Equals scikit-learn's ``balanced_accuracy_score`` (not adjusted);
    chance level on a client's 2-class test split is 0.5. NaN when ``y_true`` is empty.

    Examples
    --------
    >>> balanced_accuracy([0, 0, 1, 1], [0, 1, 1, 1])
    0.75
    """
    true, pred = _label_pair("balanced_accuracy", y_true, y_pred)
    if true.size == 0:
        return float("nan")
    recalls = _recalls(true, pred, _infer_num_classes(true, pred))
    return float(np.nanmean(recalls))


# --------------------------------------------------------------------------- AUC


def softmax(logits: Any, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax ``exp(z - max z) / Σ exp(z - max z)`` along ``axis``."""
    z = np.asarray(_as_array("softmax", "logits", logits), dtype=np.float64)
    if z.size == 0:
        return z
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _exact_aucs(true: np.ndarray, scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    # One-vs-rest ROC-AUC of each present class (ties count one half), by scikit-learn: the
    # indicator matrix of the present classes against their score columns.
    from sklearn.metrics import roc_auc_score

    indicators = (true[:, None] == present[None, :]).astype(np.int64)
    return np.asarray(roc_auc_score(indicators, scores[:, present], average=None), dtype=float)


def _grid_aucs(true: np.ndarray, scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    # The authors' evaluation: scikit-learn's ROC of each class, interpolated on a 1,000-point
    # FPR grid and integrated by the trapezoidal rule.
    from sklearn.metrics import auc, roc_curve

    grid = np.linspace(0.0, 1.0, _GRID_POINTS)
    aucs = np.empty(len(present))
    for i, cls in enumerate(present):
        fpr, tpr, _ = roc_curve(true == cls, scores[:, cls])
        aucs[i] = auc(grid, np.interp(grid, fpr, tpr))
    return aucs


def _bauc_values(
    owner: str, y_true: Any, scores: Any, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    check_param(owner, "mode", mode, Options(("exact", "grid1000")))
    true = _labels(owner, "y_true", y_true)
    score_array = np.asarray(_as_array(owner, "scores", scores), dtype=np.float64)
    if score_array.ndim != 2 or score_array.shape[0] != true.shape[0]:
        raise ValueError(
            f"{owner}: 'scores' must have shape ({true.shape[0]}, classes) to match 'y_true', "
            f"got {score_array.shape}."
        )
    if true.size and true.max() >= score_array.shape[1]:
        raise ValueError(
            f"{owner}: 'scores' must have a column for every class in 'y_true', got "
            f"{score_array.shape[1]} columns and class index {int(true.max())}."
        )
    if not np.isfinite(score_array).all():
        raise ValueError(f"{owner}: 'scores' must be finite.")
    present = np.flatnonzero(np.bincount(true, minlength=score_array.shape[1]))
    if len(present) < 2:
        return present, np.full(len(present), np.nan)
    if mode == "exact":
        return present, _exact_aucs(true, score_array, present)
    return present, _grid_aucs(true, score_array, present)


def balanced_auc(y_true: Any, scores: Any, mode: str = "exact") -> float:
    """bAUC: macro one-vs-rest ROC-AUC over the classes present in ``y_true``.

    ``bAUC = (1/|P|) Σ_{c∈P} AUC(score_c, 1[y = c])``; NaN when fewer than 2 classes are present
    (one-vs-rest AUC needs positives and negatives). Columns of classes absent from ``y_true``
    are ignored.

    Parameters
    ----------
    y_true : (N,) integer class indices
    scores : (N, C) scores, higher = more likely; usually ``softmax(logits)`` (see
        :func:`classification_metrics` for the ``auc_score`` choice)
    mode : {"exact", "grid1000"}, default "exact"
        ``"exact"``: scikit-learn's ``roc_auc_score`` of each class (the Mann-Whitney rank
        statistic, ties count one half). ``"grid1000"``: the authors' evaluation, which
        interpolates scikit-learn's ``roc_curve`` of each class on 1,000 FPR points and
        integrates by trapezoids; it differs from ``"exact"`` by the grid error only (about
        1e-3 or less).

    References
    ----------
    Evaluation code of FedNPR/FCA, github.com/Jwicaksana/FedNPR (``helper.py``).
    """
    _, aucs = _bauc_values("balanced_auc", y_true, scores, mode)
    if aucs.size == 0 or np.isnan(aucs).all():
        return float("nan")
    return float(np.mean(aucs))


# --------------------------------------------------------------------------- shot groups


def shot_groups(
    train_counts: Any,
    rule: str = "cumshare",
    *,
    many_share: float = 0.75,
    medium_share: float = 0.95,
    many_threshold: int = 100,
    few_threshold: int = 20,
    index_bounds: tuple[int, int] = (2, 6),
) -> dict[str, list[int]]:
    """Split classes into many / medium / few-shot groups from **global training** counts.

    Rules (``evaluation.md`` §3.3):

    * ``"cumshare"`` (default for ISIC/ICH): sort classes by count, largest first (ties by class
      index); many = the classes up to and including the one where the cumulative share of
      images first reaches ``many_share`` (75 %); medium = the following ones up to where it
      first reaches ``medium_share`` (95 %); few = the rest.
    * ``"threshold"`` (CIFAR-100-LT, ImageNet-LT): many ``n > many_threshold`` (100), medium
      ``few_threshold <= n <= many_threshold``, few ``n < few_threshold`` (20).
    * ``"index"`` (CIFAR-10-LT as in FedGraB, whose classes are sorted by count): many =
      ``[0, index_bounds[0])``, medium = ``[index_bounds[0], index_bounds[1])``, few = the rest;
      the default (2, 6) gives {0, 1}, {2..5}, {6..9} for ten classes.

    Returns
    -------
    dict with keys "many", "medium", "few", each a list of class indices in ascending order
    (a group may be empty).

    Examples
    --------
    >>> shot_groups([1198, 11146, 7130, 11773, 23125])  # RSNA-ICH: EDH, IPH, IVH, SAH, SDH
    {'many': [1, 3, 4], 'medium': [2], 'few': [0]}
    """
    owner = "shot_groups"
    check_param(owner, "rule", rule, Options(("cumshare", "threshold", "index")))
    counts = np.asarray(_as_array(owner, "train_counts", train_counts), dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(
            f"{owner}: 'train_counts' must be 1-D with one count per class, "
            f"got shape {counts.shape}."
        )
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(
            f"{owner}: 'train_counts' must hold finite counts >= 0, got {counts.tolist()}."
        )
    num_classes = counts.size
    group_of = np.empty(num_classes, dtype=np.int64)  # 0 many, 1 medium, 2 few
    if rule == "cumshare":
        check_param(owner, "many_share", many_share, Interval(float, 0, 1, closed="right"))
        check_param(owner, "medium_share", medium_share, Interval(float, 0, 1, closed="right"))
        if medium_share < many_share:
            raise ValueError(
                f"{owner}: 'medium_share' must be >= 'many_share' = {many_share!r}, "
                f"got {medium_share!r}."
            )
        total = counts.sum()
        if total <= 0:
            raise ValueError(f"{owner}: 'train_counts' must have a positive sum for 'cumshare'.")
        order = np.argsort(-counts, kind="stable")
        share_before = np.r_[0.0, np.cumsum(counts[order])[:-1]] / total
        # A class joins a group while the share *before* it is still short of the cut-off,
        # so the class whose addition crosses the cut-off is the group's last member.
        tol = 1e-12
        sorted_group = np.where(
            share_before < many_share - tol, 0, np.where(share_before < medium_share - tol, 1, 2)
        )
        group_of[order] = sorted_group
    elif rule == "threshold":
        check_param(owner, "many_threshold", many_threshold, Interval(float, 0, None))
        check_param(owner, "few_threshold", few_threshold, Interval(float, 0, None))
        if few_threshold > many_threshold:
            raise ValueError(
                f"{owner}: 'few_threshold' must be <= 'many_threshold' = {many_threshold!r}, "
                f"got {few_threshold!r}."
            )
        group_of = np.where(counts > many_threshold, 0, np.where(counts >= few_threshold, 1, 2))
    else:
        valid = (
            isinstance(index_bounds, tuple | list)
            and len(index_bounds) == 2
            and all(isinstance(b, numbers.Integral) and not isinstance(b, bool)
                    for b in index_bounds)
            and 0 <= index_bounds[0] <= index_bounds[1]
        )
        if not valid:
            raise ValueError(
                f"{owner}: 'index_bounds' must be two ints (start_medium, start_few) with "
                f"0 <= start_medium <= start_few, got {index_bounds!r}."
            )
        index = np.arange(num_classes)
        group_of = np.where(index < index_bounds[0], 0, np.where(index < index_bounds[1], 1, 2))
    return {
        name: [int(c) for c in np.flatnonzero(group_of == g)]
        for g, name in enumerate(SHOT_GROUPS)
    }


def shot_accuracy(
    y_true: Any, y_pred: Any, groups: Mapping[str, Sequence[int]]
) -> dict[str, float]:
    """Accuracy of each shot group: mean per-class recall over the group's classes.

    ``acc_G = mean_{c ∈ G ∩ P} recall_c`` with P the classes present in ``y_true`` (equal to the
    sample accuracy on a balanced test set). NaN for a group with no class present.

    Parameters
    ----------
    y_true, y_pred : (N,) integer class indices
    groups : mapping group name -> class indices, e.g. from :func:`shot_groups`
    """
    owner = "shot_accuracy"
    true, pred = _label_pair(owner, y_true, y_pred)
    if not isinstance(groups, Mapping):
        raise TypeError(
            f"{owner}: 'groups' must be a mapping from group name to class indices, "
            f"got {type(groups).__name__}."
        )
    members = {name: np.asarray(list(classes), dtype=np.int64) for name, classes in groups.items()}
    largest = max((int(m.max()) for m in members.values() if m.size), default=-1)
    if any(m.size and m.min() < 0 for m in members.values()):
        raise ValueError(f"{owner}: 'groups' must hold class indices >= 0, got {dict(groups)!r}.")
    recalls = _recalls(true, pred, max(_infer_num_classes(true, pred), largest + 1))
    result = {}
    for name, classes in members.items():
        values = recalls[classes]
        values = values[~np.isnan(values)]
        result[name] = float(values.mean()) if values.size else float("nan")
    return result


# --------------------------------------------------------------------------- client means


def _client_values(owner: str, values: Any, sizes: Any, mode: str):
    check_param(owner, "mode", mode, Options(("unweighted", "weighted", "micro")))
    vals = np.asarray(_as_array(owner, "values", values), dtype=np.float64)
    if vals.ndim != 1:
        raise ValueError(f"{owner}: 'values' must be 1-D (clients,), got shape {vals.shape}.")
    if sizes is None:
        if mode != "unweighted":
            raise ValueError(f"{owner}: 'sizes' is required for mode {mode!r}, got None.")
        return vals, None
    weights = np.asarray(_as_array(owner, "sizes", sizes), dtype=np.float64)
    if weights.shape != vals.shape:
        raise ValueError(
            f"{owner}: 'sizes' must have the shape of 'values' {vals.shape}, "
            f"got {weights.shape}."
        )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(
            f"{owner}: 'sizes' must hold finite sizes >= 0, got {weights.tolist()}."
        )
    return vals, weights


def client_mean(values: Any, sizes: Any = None, mode: str = "unweighted") -> float:
    """Mean of a per-client metric; clients whose value is NaN are left out.

    * ``"unweighted"`` (default for specialization): ``(1/K) Σ_k v_k``.
    * ``"weighted"``: ``Σ_k n_k v_k / Σ_k n_k`` with ``n_k`` = ``sizes`` (test-set sizes).
    * ``"micro"`` (PFLlib): ``Σ_k correct_k / Σ_k n_k``; here ``values`` are the per-client
      **counts of correct predictions** and ``sizes`` the per-client numbers of predictions.
      (For accuracy this equals ``"weighted"``; for other metrics pool the predictions and call
      the metric instead.)

    Returns NaN when no client has a defined value.

    Examples
    --------
    >>> client_mean([0.5, 1.0])
    0.75
    >>> round(client_mean([0.5, 1.0], sizes=[1000, 10], mode="weighted"), 4)
    0.505
    """
    owner = "client_mean"
    vals, weights = _client_values(owner, values, sizes, mode)
    if mode == "micro":
        if (np.isnan(vals) | (vals < 0) | (vals > weights) | (vals != np.round(vals))).any():
            raise ValueError(
                f"{owner}: mode 'micro' needs 'values' = per-client counts of correct "
                f"predictions (integers in [0, size]), got {vals.tolist()}."
            )
        total = weights.sum()
        return float(vals.sum() / total) if total > 0 else float("nan")
    defined = ~np.isnan(vals)
    if not defined.any():
        return float("nan")
    if mode == "unweighted":
        return float(vals[defined].mean())
    total = weights[defined].sum()
    return float((vals[defined] * weights[defined]).sum() / total) if total > 0 else float("nan")


def client_summary(values: Any, sizes: Any = None, mode: str = "unweighted") -> dict[str, float]:
    """Mean (as :func:`client_mean`), population std over clients and how many were skipped.

    Returns ``{"mean", "std", "num_clients", "num_undefined"}``; ``std`` is the unweighted
    standard deviation (ddof = 0) of the defined per-client values (NaN for ``"micro"``).
    """
    mean = client_mean(values, sizes, mode)
    vals, _ = _client_values("client_summary", values, sizes, mode)
    defined = vals[~np.isnan(vals)]
    std = float(defined.std()) if defined.size and mode != "micro" else float("nan")
    return {
        "mean": mean,
        "std": std,
        "num_clients": float(vals.size),
        "num_undefined": float(vals.size - defined.size),
    }


# --------------------------------------------------------------------------- segmentation


def dice_score(
    prediction: Any,
    target: Any,
    *,
    from_logits: bool = True,
    eps: float = 1e-4,
    empty_empty: float | str = 1.0,
    reduction: str = "mean",
) -> float | np.ndarray:
    """Dice of thresholded predictions, per image (mean over channels), then mean over images.

    Per image and channel: ``ŷ = 1[σ(z) > 0.5]`` (``z > 0`` for logits, ``p > 0.5`` for
    probabilities), ``Dice = (2|ŷ ∩ y| + ε) / (|ŷ| + |y| + ε)``, ε = 1e-4. Empty masks: both
    empty gives 1 (the formula itself does so); exactly one empty gives ``ε/(m + ε) ≈ 0``, m the
    foreground pixels of the other. Multi-class: Dice per channel, then the mean over channels.
    A client's score is the mean over its test images; the overall score is the unweighted mean
    over clients (:func:`client_mean`).

    Parameters
    ----------
    prediction : (N, H, W) or (N, C, H, W) logits, or probabilities with ``from_logits=False``
    target : same shape, binary {0, 1}
    from_logits : bool, default True
    eps : float > 0, default 1e-4
    empty_empty : 1.0 or "skip", default 1.0
        Score of a channel where both masks are empty. ``"skip"`` leaves such channels out; an
        image with every channel skipped is NaN and left out of the mean.
    reduction : {"mean", "none"}, default "mean"
        ``"none"`` returns the (N,) per-image scores.

    References
    ----------
    Evaluation of FedMix, Wicaksana et al., IEEE TMI 2023, arXiv:2205.01840.
    """
    owner = "dice_score"
    check_param(owner, "from_logits", from_logits, Options((True, False)))
    check_param(owner, "eps", eps, Interval(float, 0, None, closed="neither"))
    check_param(owner, "empty_empty", empty_empty,
                AnyOf(Options(("skip",)), Interval(float, 0, 1, closed="both")))
    check_param(owner, "reduction", reduction, Options(("mean", "none")))
    pred = np.asarray(_as_array(owner, "prediction", prediction), dtype=np.float64)
    true = _as_array(owner, "target", target)
    if pred.ndim not in (3, 4) or true.shape != pred.shape:
        raise ValueError(
            f"{owner}: 'prediction' and 'target' must share a shape (N, H, W) or (N, C, H, W), "
            f"got {pred.shape} and {true.shape}."
        )
    if not np.isin(true, (0, 1)).all():
        raise ValueError(f"{owner}: 'target' must be a binary mask with values 0 and 1.")
    if pred.ndim == 3:
        pred, true = pred[:, None], true[:, None]
    predicted = pred > 0.0 if from_logits else pred > 0.5
    truth = true.astype(bool)
    n, c = pred.shape[:2]
    overlap = (predicted & truth).reshape(n, c, -1).sum(-1)
    predicted_size = predicted.reshape(n, c, -1).sum(-1)
    true_size = truth.reshape(n, c, -1).sum(-1)
    dice = (2.0 * overlap + eps) / (predicted_size + true_size + eps)
    both_empty = (predicted_size == 0) & (true_size == 0)
    dice = np.where(both_empty, np.nan if empty_empty == "skip" else float(empty_empty), dice)
    per_image = _nanmean_rows(dice)
    if reduction == "none":
        return per_image
    defined = per_image[~np.isnan(per_image)]
    return float(defined.mean()) if defined.size else float("nan")


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    counts = (~np.isnan(values)).sum(axis=1)
    sums = np.where(np.isnan(values), 0.0, values).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# --------------------------------------------------------------------------- summary


def classification_metrics(
    y_true: Any,
    logits: Any,
    num_classes: int,
    train_counts: Any = None,
    *,
    auc_mode: str = "exact",
    auc_score: str = "softmax",
    shot_rule: str = "cumshare",
) -> dict[str, float]:
    """The classification summary of one evaluation: accuracy, BAcc, bAUC and shot groups.

    Predictions are ``argmax`` of the raw logits (ties go to the lower class index).

    Parameters
    ----------
    y_true : (N,) integer class indices
    logits : (N, C) raw logits
    num_classes : int, C
    train_counts : (C,) global training counts, optional
        When given, adds ``"many_shot_accuracy"``, ``"medium_shot_accuracy"`` and
        ``"few_shot_accuracy"`` with groups from :func:`shot_groups` (``rule=shot_rule``).
    auc_mode : {"exact", "grid1000"}, default "exact"
    auc_score : {"softmax", "logit"}, default "softmax"
        Scores ranked by the AUC: the softmax of the logits, or the raw logits.
    shot_rule : {"cumshare", "threshold", "index"}, default "cumshare"

    Returns
    -------
    dict with "accuracy", "balanced_accuracy", "bauc" (NaN with fewer than 2 classes present)
    and, with ``train_counts``, the three shot-group accuracies.
    """
    owner = "classification_metrics"
    check_param(owner, "auc_score", auc_score, Options(("softmax", "logit")))
    check_param(owner, "auc_mode", auc_mode, Options(("exact", "grid1000")))
    true = _labels(owner, "y_true", y_true)
    z = np.asarray(_as_array(owner, "logits", logits), dtype=np.float64)
    num_classes = _check_num_classes(owner, num_classes, true)
    if z.shape != (true.shape[0], num_classes):
        raise ValueError(
            f"{owner}: 'logits' must have shape ({true.shape[0]}, {num_classes}), "
            f"got {z.shape}."
        )
    pred = z.argmax(axis=1) if z.size else np.zeros(0, dtype=np.int64)
    scores = softmax(z, axis=1) if auc_score == "softmax" else z
    result = {
        "accuracy": accuracy(true, pred),
        "balanced_accuracy": balanced_accuracy(true, pred),
        "bauc": balanced_auc(true, scores, mode=auc_mode),
    }
    if train_counts is not None:
        counts = np.asarray(_as_array(owner, "train_counts", train_counts))
        if counts.shape != (num_classes,):
            raise ValueError(
                f"{owner}: 'train_counts' must have shape ({num_classes},), got {counts.shape}."
            )
        groups = shot_groups(counts, rule=shot_rule)
        for name, value in shot_accuracy(true, pred, groups).items():
            result[f"{name}_shot_accuracy"] = value
    return result
