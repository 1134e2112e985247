"""Pin the maths of fedlib.metrics with hand-computed values and scikit-learn cross-checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from fedlib.data.templates import ICH_CLASSES, ISIC2019_CLASSES, site_template
from fedlib.metrics import (
    accuracy,
    balanced_accuracy,
    balanced_auc,
    classification_metrics,
    client_mean,
    client_summary,
    confusion_matrix,
    dice_score,
    per_class_recall,
    shot_accuracy,
    shot_groups,
    softmax,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _names(indices, class_names):
    return {class_names[i] for i in indices}


# --------------------------------------------------------------------------- accuracy family


def test_balanced_accuracy_hand_value():
    assert balanced_accuracy([0, 0, 1, 1], [0, 1, 1, 1]) == 0.75
    assert accuracy([0, 0, 1, 1], [0, 1, 1, 1]) == 0.75


def test_predicted_class_absent_from_truth_does_not_enter():
    # Class 2 is only predicted: recall_0 = 1/2, recall_1 = 1 -> 0.75, not (0.5 + 1 + 0) / 3.
    assert balanced_accuracy([0, 0, 1, 1], [0, 2, 1, 1]) == 0.75


def test_balanced_accuracy_matches_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 6, 500)
    y_true[y_true == 3] = 0  # class 3 absent from the truth
    y_pred = rng.integers(0, 7, 500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = sklearn_metrics.balanced_accuracy_score(y_true, y_pred)
    assert balanced_accuracy(y_true, y_pred) == pytest.approx(expected, abs=1e-12)


def test_per_class_recall_and_confusion_matrix():
    y_true = np.array([0, 0, 1, 1, 1])
    y_pred = np.array([0, 1, 1, 1, 0])
    recall = per_class_recall(y_true, y_pred, num_classes=3)
    assert recall[:2].tolist() == [0.5, pytest.approx(2 / 3)]
    assert math.isnan(recall[2])
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 0]]


def test_torch_tensors_are_accepted():
    assert balanced_accuracy(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1])) == 0.75


def test_empty_inputs_give_nan():
    assert math.isnan(accuracy([], []))
    assert math.isnan(balanced_accuracy(np.zeros(0, np.int64), np.zeros(0, np.int64)))


# --------------------------------------------------------------------------- bAUC


def _random_scores(seed, n=600, c=5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    return y, softmax(logits)


def test_bauc_exact_matches_sklearn_per_class_mean():
    y, scores = _random_scores(1)
    expected = np.mean([
        sklearn_metrics.roc_auc_score(y == c, scores[:, c]) for c in range(scores.shape[1])
    ])
    assert balanced_auc(y, scores) == pytest.approx(expected, abs=1e-12)
    macro = sklearn_metrics.roc_auc_score(y, scores, multi_class="ovr", average="macro")
    assert balanced_auc(y, scores) == pytest.approx(macro, abs=1e-12)


def test_bauc_exact_handles_ties_like_sklearn():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    scores = np.round(np.random.default_rng(2).random((8, 3)), 1)  # many tied scores
    expected = np.mean([sklearn_metrics.roc_auc_score(y == c, scores[:, c]) for c in range(3)])
    assert balanced_auc(y, scores) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_bauc_exact_and_grid1000_agree(seed):
    y, scores = _random_scores(seed)
    exact = balanced_auc(y, scores, mode="exact")
    grid = balanced_auc(y, scores, mode="grid1000")
    assert abs(exact - grid) < 2e-3


def test_bauc_grid1000_follows_the_authors_interpolation():
    # The authors' evaluation: sklearn roc_curve, np.interp on a 1,000-point FPR grid, trapezoids.
    y, scores = _random_scores(6, n=200, c=3)
    grid = np.linspace(0.0, 1.0, 1000)
    per_class = []
    for c in range(3):
        fpr, tpr, _ = sklearn_metrics.roc_curve(y == c, scores[:, c])
        per_class.append(sklearn_metrics.auc(grid, np.interp(grid, fpr, tpr)))
    assert balanced_auc(y, scores, mode="grid1000") == pytest.approx(np.mean(per_class), abs=1e-9)


@pytest.mark.parametrize("mode", ["exact", "grid1000"])
def test_bauc_perfect_ranking_is_one(mode):
    y = np.array([0, 0, 1, 1, 2, 2])
    scores = np.eye(3)[y] * 0.9 + 0.05
    assert balanced_auc(y, scores, mode=mode) == pytest.approx(1.0, abs=1e-12)


def test_bauc_skips_absent_classes():
    y = np.array([0, 0, 2, 2, 0, 2])
    scores = np.array([
        [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.1, 0.7],
        [0.5, 0.1, 0.4], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8],
    ])
    # Only classes 0 and 2 are present; column 1 never counts.
    expected = np.mean([sklearn_metrics.roc_auc_score(y == c, scores[:, c]) for c in (0, 2)])
    assert balanced_auc(y, scores) == pytest.approx(expected, abs=1e-12)


def test_bauc_nan_with_fewer_than_two_classes():
    assert math.isnan(balanced_auc([1, 1, 1], np.full((3, 3), 1 / 3)))


@pytest.mark.parametrize("mode", ["exact", "grid1000"])
def test_bauc_undefined_inputs_give_nan_without_warnings(mode):
    # scikit-learn is never asked for an AUC it cannot define (a class with no positives or no
    # negatives): one class present, or no samples, is NaN by fedlib's convention.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(balanced_auc([2, 2], np.array([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]),
                                       mode=mode))
        assert math.isnan(balanced_auc(np.zeros(0, np.int64), np.zeros((0, 3)), mode=mode))
        # two classes present out of three: the absent class's column is never scored
        y, scores = np.array([0, 2, 0, 2]), np.array([[0.9, 0.0, 0.1], [0.2, 0.0, 0.8],
                                                      [0.6, 0.0, 0.4], [0.7, 0.0, 0.3]])
        assert balanced_auc(y, scores, mode=mode) == pytest.approx(0.75, abs=1e-3)


# --------------------------------------------------------------------------- shot groups


def test_cumshare_isic_groups():
    counts = site_template("isic2019").sum(axis=0)
    groups = shot_groups(counts)
    assert _names(groups["many"], ISIC2019_CLASSES) == {"NV", "MEL", "BCC"}
    assert _names(groups["medium"], ISIC2019_CLASSES) == {"BKL", "AK"}
    assert _names(groups["few"], ISIC2019_CLASSES) == {"SCC", "VASC", "DF"}


def test_cumshare_ich_groups():
    groups = shot_groups([1198, 11146, 7130, 11773, 23125])
    assert _names(groups["many"], ICH_CLASSES) == {"SDH", "SAH", "IPH"}
    assert _names(groups["medium"], ICH_CLASSES) == {"IVH"}
    assert _names(groups["few"], ICH_CLASSES) == {"EDH"}


def test_cumshare_class_reaching_the_cutoff_exactly_is_many():
    # Shares 0.75, 0.2, 0.05: the first class alone reaches 75 %, the second reaches 95 %.
    assert shot_groups([75, 20, 5]) == {"many": [0], "medium": [1], "few": [2]}


def test_threshold_and_index_rules():
    counts = [500, 101, 100, 20, 19, 0]
    assert shot_groups(counts, rule="threshold") == {
        "many": [0, 1], "medium": [2, 3], "few": [4, 5]
    }
    assert shot_groups(np.arange(10)[::-1], rule="index") == {
        "many": [0, 1], "medium": [2, 3, 4, 5], "few": [6, 7, 8, 9]
    }


def test_shot_accuracy_is_mean_recall_in_group():
    groups = {"many": [0, 1], "medium": [2], "few": [3]}
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 0, 0]
    result = shot_accuracy(y_true, y_pred, groups)
    assert result["many"] == 0.75
    assert result["medium"] == 0.0
    assert math.isnan(result["few"])  # class 3 not in the test set


# --------------------------------------------------------------------------- client means


def test_specialization_unweighted_and_weighted():
    assert client_mean([0.5, 1.0]) == 0.75
    assert client_mean([0.5, 1.0], sizes=[1000, 10], mode="weighted") == pytest.approx(
        510 / 1010
    )
    assert round(client_mean([0.5, 1.0], sizes=[1000, 10], mode="weighted"), 3) == 0.505


def test_client_mean_micro_pools_correct_counts():
    assert client_mean([500, 10], sizes=[1000, 10], mode="micro") == pytest.approx(510 / 1010)


def test_client_mean_skips_undefined_and_summary_counts_them():
    assert client_mean([0.5, float("nan"), 1.0]) == 0.75
    summary = client_summary([0.5, float("nan"), 1.0])
    assert summary == {"mean": 0.75, "std": 0.25, "num_clients": 3.0, "num_undefined": 1.0}
    assert math.isnan(client_mean([float("nan")]))


# --------------------------------------------------------------------------- Dice


def test_dice_both_empty_is_one():
    empty = np.zeros((1, 1, 8, 8))
    assert dice_score(np.full((1, 1, 8, 8), -5.0), empty) == 1.0


def test_dice_empty_prediction_against_hundred_pixels():
    target = np.zeros((1, 1, 20, 20))
    target.reshape(-1)[:100] = 1
    score = dice_score(np.full((1, 1, 20, 20), -3.0), target)
    assert score == pytest.approx(1e-4 / (100 + 1e-4), rel=1e-12)


def test_dice_identical_masks_is_one():
    target = np.zeros((2, 1, 8, 8))
    target[0, 0, 1:4, 2:6] = 1
    target[1, 0, 5, 5] = 1
    probs = target.copy()
    assert dice_score(probs, target, from_logits=False) == 1.0
    logits = np.where(target > 0, 4.0, -4.0)
    assert dice_score(torch.from_numpy(logits), torch.from_numpy(target)) == 1.0


def test_dice_per_image_mean_channels_and_skip():
    # Image 0: channel 0 perfect, channel 1 both empty. Image 1: channel 0 half overlap.
    target = np.zeros((2, 2, 2, 2))
    target[0, 0, 0, 0] = 1
    target[1, 0, 0, :] = 1
    pred = np.zeros_like(target)
    pred[0, 0, 0, 0] = 1
    pred[1, 0, 0, 0] = 1
    pred[1, 0, 1, 0] = 1
    eps = 1e-4
    half = (2 * 1 + eps) / (2 + 2 + eps)
    empty_other = eps / (0 + eps)  # image 1 channel 1: both empty -> 1
    per_image = dice_score(pred, target, from_logits=False, reduction="none")
    assert per_image.tolist() == pytest.approx([1.0, (half + empty_other) / 2])
    skipped = dice_score(pred, target, from_logits=False, empty_empty="skip", reduction="none")
    assert skipped.tolist() == pytest.approx([1.0, half])
    all_empty = dice_score(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), from_logits=False,
                           empty_empty="skip")
    assert math.isnan(all_empty)


# --------------------------------------------------------------------------- summary


def test_classification_metrics_summary():
    y = np.array([0, 0, 1, 1, 2, 2])
    logits = np.array([
        [3.0, 0, 0], [0, 3.0, 0], [0, 3.0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0],
    ])
    result = classification_metrics(y, logits, 3, train_counts=[100, 10, 1])
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert result["bauc"] == pytest.approx(balanced_auc(y, softmax(logits)))
    # cumshare on (100, 10, 1): many {0}, medium {1}, few {2}
    assert result["many_shot_accuracy"] == 0.5
    assert result["medium_shot_accuracy"] == 1.0
    assert result["few_shot_accuracy"] == 0.5
    by_logit = classification_metrics(y, logits, 3, auc_score="logit")
    assert set(by_logit) == {"accuracy", "balanced_accuracy", "bauc"}
    assert by_logit["bauc"] == pytest.approx(balanced_auc(y, logits))


# --------------------------------------------------------------------------- validation messages

_VALIDATION_CASES = [
    ("labels_dtype", lambda: accuracy([0.0, 1.0], [0, 1]), TypeError,
     r"accuracy: 'y_true' must hold integer class indices, got dtype float64\."),
    ("labels_ndim", lambda: accuracy(np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64)),
     ValueError, r"accuracy: 'y_true' must be 1-D \(samples,\), got shape \(2, 2\)\."),
    ("labels_negative", lambda: balanced_accuracy([0, -1], [0, 1]), ValueError,
     r"balanced_accuracy: 'y_true' must hold class indices >= 0, got -1\."),
    ("labels_shape", lambda: balanced_accuracy([0, 1], [0, 1, 1]), ValueError,
     r"balanced_accuracy: 'y_pred' must have the shape of 'y_true' \(2,\), got \(3,\)\."),
    ("labels_type", lambda: accuracy("01", [0, 1]), TypeError,
     r"accuracy: 'y_true' must be a numpy array, torch tensor or sequence, got str\."),
    ("num_classes", lambda: per_class_recall([0], [0], num_classes=0), ValueError,
     r"per_class_recall: 'num_classes' must be an int >= 1, got 0\."),
    ("num_classes_small", lambda: confusion_matrix([0, 3], [0, 1], num_classes=3), ValueError,
     r"confusion_matrix: class indices must be < 'num_classes' = 3, got 3\."),
    ("auc_mode", lambda: balanced_auc([0, 1], np.eye(2), mode="grid"), ValueError,
     r"balanced_auc: 'mode' must be one of 'exact', 'grid1000', got 'grid'\."),
    ("auc_scores_shape", lambda: balanced_auc([0, 1], np.ones(2)), ValueError,
     r"balanced_auc: 'scores' must have shape \(2, classes\) to match 'y_true', got \(2,\)\."),
    ("auc_scores_columns", lambda: balanced_auc([0, 2], np.ones((2, 2))), ValueError,
     r"balanced_auc: 'scores' must have a column for every class in 'y_true'"),
    ("auc_scores_finite", lambda: balanced_auc([0, 1], np.array([[np.nan, 0], [0, 1]])),
     ValueError, r"balanced_auc: 'scores' must be finite\."),
    ("shot_rule", lambda: shot_groups([3, 2, 1], rule="quantile"), ValueError,
     r"shot_groups: 'rule' must be one of 'cumshare', 'threshold', 'index', got 'quantile'\."),
    ("shot_counts", lambda: shot_groups([3, -2, 1]), ValueError,
     r"shot_groups: 'train_counts' must hold finite counts >= 0"),
    ("shot_counts_shape", lambda: shot_groups(np.ones((2, 2))), ValueError,
     r"shot_groups: 'train_counts' must be 1-D with one count per class"),
    ("shot_counts_zero", lambda: shot_groups([0, 0]), ValueError,
     r"shot_groups: 'train_counts' must have a positive sum for 'cumshare'\."),
    ("shot_many_share", lambda: shot_groups([3, 2, 1], many_share=1.5), ValueError,
     r"shot_groups: 'many_share' must be a float > 0 and <= 1, got 1\.5\."),
    ("shot_share_order", lambda: shot_groups([3, 2, 1], many_share=0.9, medium_share=0.8),
     ValueError, r"shot_groups: 'medium_share' must be >= 'many_share' = 0\.9, got 0\.8\."),
    ("shot_threshold_order", lambda: shot_groups([3, 2], rule="threshold", few_threshold=200),
     ValueError, r"shot_groups: 'few_threshold' must be <= 'many_threshold' = 100, got 200\."),
    ("shot_index_bounds", lambda: shot_groups([3, 2], rule="index", index_bounds=(5, 2)),
     ValueError, r"shot_groups: 'index_bounds' must be two ints \(start_medium, start_few\)"),
    ("shot_groups_type", lambda: shot_accuracy([0], [0], [[0]]), TypeError,
     r"shot_accuracy: 'groups' must be a mapping from group name to class indices"),
    ("client_mode", lambda: client_mean([0.5], mode="median"), ValueError,
     r"client_mean: 'mode' must be one of 'unweighted', 'weighted', 'micro', got 'median'\."),
    ("client_sizes_missing", lambda: client_mean([0.5], mode="weighted"), ValueError,
     r"client_mean: 'sizes' is required for mode 'weighted', got None\."),
    ("client_sizes_shape", lambda: client_mean([0.5, 1.0], sizes=[3], mode="weighted"),
     ValueError, r"client_mean: 'sizes' must have the shape of 'values' \(2,\), got \(1,\)\."),
    ("client_sizes_negative", lambda: client_mean([0.5], sizes=[-1], mode="weighted"),
     ValueError, r"client_mean: 'sizes' must hold finite sizes >= 0, got \[-1\.0\]\."),
    ("client_micro_values", lambda: client_mean([0.5, 1.0], sizes=[10, 10], mode="micro"),
     ValueError, r"client_mean: mode 'micro' needs 'values' = per-client counts of correct"),
    ("dice_empty_empty", lambda: dice_score(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)),
                                            empty_empty="one"), ValueError,
     r"dice_score: 'empty_empty' must be one of 'skip' or a float >= 0 and <= 1, got 'one'\."),
    ("dice_eps", lambda: dice_score(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), eps=0), ValueError,
     r"dice_score: 'eps' must be a float > 0, got 0\."),
    ("dice_reduction", lambda: dice_score(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)),
                                          reduction="sum"), ValueError,
     r"dice_score: 'reduction' must be one of 'mean', 'none', got 'sum'\."),
    ("dice_shape", lambda: dice_score(np.zeros((1, 2, 2)), np.zeros((1, 2, 3))), ValueError,
     r"dice_score: 'prediction' and 'target' must share a shape"),
    ("dice_target_binary", lambda: dice_score(np.zeros((1, 2, 2)), np.full((1, 2, 2), 0.5)),
     ValueError, r"dice_score: 'target' must be a binary mask with values 0 and 1\."),
    ("metrics_auc_score", lambda: classification_metrics([0, 1], np.eye(2), 2, auc_score="prob"),
     ValueError,
     r"classification_metrics: 'auc_score' must be one of 'softmax', 'logit', got 'prob'\."),
    ("metrics_logits_shape", lambda: classification_metrics([0, 1], np.eye(3), 2), ValueError,
     r"classification_metrics: 'logits' must have shape \(2, 2\), got \(3, 3\)\."),
    ("metrics_train_counts", lambda: classification_metrics([0, 1], np.eye(2), 2,
                                                            train_counts=[1, 2, 3]), ValueError,
     r"classification_metrics: 'train_counts' must have shape \(2,\), got \(3,\)\."),
]


@pytest.mark.parametrize(
    ("make_call", "error", "message"),
    [case[1:] for case in _VALIDATION_CASES],
    ids=[case[0] for case in _VALIDATION_CASES],
)
def test_validation_message(make_call, error, message):
    with pytest.raises(error, match=message):
        make_call()
