"""Partitions (long tail, Dirichlet, pathological, natural), their statistics, federate(),
and the partition figures."""

import numpy as np
import pandas as pd
import pytest
import torch

from fedlib.data.base import ArrayDataset
from fedlib.data.partitions import (
    check_partition,
    dirichlet_partition,
    federate,
    longtail_counts,
    longtail_subsample,
    natural_partition,
    partition_stats,
    pathological_partition,
    proportional_test_indices,
    split_count_table,
    stratified_split,
)
from fedlib.viz.partitions import (
    client_class_bars,
    client_class_heatmap,
    partition_slider_figure,
)


def balanced_labels(num_classes=10, per_class=100):
    return np.repeat(np.arange(num_classes), per_class)


def assert_exact_cover(parts, n):
    flat = np.concatenate(parts)
    assert np.array_equal(np.sort(flat), np.arange(n))


# ----------------------------------------------------------------------------- long tail


@pytest.mark.parametrize(
    ("n_max", "num_classes", "imbalance_factor", "total"),
    [(5000, 10, 100, 12406), (500, 100, 100, 10847), (5000, 10, 50, 13996), (5000, 10, 10, 20431)],
)
def test_longtail_counts_match_benchmark_totals(n_max, num_classes, imbalance_factor, total):
    counts = longtail_counts(n_max, num_classes, imbalance_factor)
    assert counts.sum() == total
    assert counts[0] == n_max
    assert counts[-1] == n_max // imbalance_factor
    assert np.all(np.diff(counts) <= 0)


def test_longtail_counts_formula_by_hand():
    # n_c = floor(100 * 4^(-c/2)): 100, 50, 25
    assert longtail_counts(100, 3, 4).tolist() == [100, 50, 25]
    assert longtail_counts(7, 4, 1).tolist() == [7, 7, 7, 7]
    assert longtail_counts(9, 1, 100).tolist() == [9]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"imbalance_factor": 0.5}, "'imbalance_factor'"),
        ({"n_max": 0}, "'n_max'"),
        ({"num_classes": 0}, "'num_classes'"),
    ],
)
def test_longtail_counts_rejects_bad_input(kwargs, match):
    args = {"n_max": 100, "num_classes": 3, "imbalance_factor": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        longtail_counts(**args)


def test_longtail_subsample_counts_and_seed():
    y = balanced_labels(3, 100)
    keep = longtail_subsample(y, 4, seed=1)
    assert np.bincount(y[keep]).tolist() == [100, 50, 25]
    assert np.array_equal(keep, longtail_subsample(y, 4, seed=1))
    assert not np.array_equal(keep, longtail_subsample(y, 4, seed=2))
    assert np.bincount(y[longtail_subsample(y, 4, seed=0, n_max=40)]).tolist() == [40, 20, 10]


def test_longtail_subsample_rejects_short_classes():
    y = np.array([0] * 10 + [1] * 2)
    with pytest.raises(ValueError, match="'n_max'"):
        longtail_subsample(y, 2, n_max=10)
    with pytest.raises(ValueError, match="'imbalance_factor'"):
        longtail_subsample(y, 0.5)


# ----------------------------------------------------------------------------- Dirichlet


@pytest.mark.parametrize(
    "options", [{}, {"self_balancing": True}, {"equal_size": True}, {"alpha": 0.1}]
)
def test_dirichlet_assigns_every_index_once_and_respects_min_size(options):
    y = balanced_labels()
    kwargs = {"alpha": 0.5, "min_size": 10, "seed": 3} | options
    parts = dirichlet_partition(y, 10, **kwargs)
    assert len(parts) == 10
    assert_exact_cover(parts, y.size)
    assert min(len(p) for p in parts) >= 10
    assert all(p.dtype == np.int64 for p in parts)


def test_dirichlet_is_reproducible_by_seed():
    y = balanced_labels()
    a = dirichlet_partition(y, 8, 0.3, seed=5)
    b = dirichlet_partition(y, 8, 0.3, seed=5)
    c = dirichlet_partition(y, 8, 0.3, seed=6)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


def test_dirichlet_equal_size_gives_sizes_within_one():
    y = balanced_labels(10, 101)  # 1010 samples over 7 clients -> 144 or 145
    sizes = [len(p) for p in dirichlet_partition(y, 7, 0.2, equal_size=True, min_size=0)]
    assert sorted(set(sizes)) == [144, 145]


def test_dirichlet_limits_single_client_and_large_alpha():
    y = balanced_labels(4, 50)
    (only,) = dirichlet_partition(y, 1, 0.5)
    assert np.array_equal(only, np.arange(200))
    # alpha -> infinity: proportions -> 1/K, each class of 50 splits about 25 / 25
    counts = partition_stats(y, dirichlet_partition(y, 2, 1e6, seed=0)).to_numpy()
    assert np.abs(counts - 25).max() <= 1


def test_dirichlet_small_alpha_is_more_skewed():
    y = balanced_labels()

    def mean_classes_present(alpha):
        counts = partition_stats(y, dirichlet_partition(y, 10, alpha, min_size=0, seed=0))
        return (counts.to_numpy() > 0).sum(axis=1).mean()

    assert mean_classes_present(0.05) < mean_classes_present(100.0) == 10


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": 0.0}, ValueError, "'alpha'"),
        ({"alpha": -1.0}, ValueError, "'alpha'"),
        ({"num_clients": 0}, ValueError, "'num_clients'"),
        ({"num_clients": 1001}, ValueError, "'num_clients'.*number of samples"),
        ({"min_size": 200}, ValueError, "'min_size'.*impossible"),
        ({"max_tries": 0}, ValueError, "'max_tries'"),
        ({"seed": -1}, ValueError, "'seed'"),
        ({"alpha": "0.5"}, TypeError, "'alpha'"),
        ({"equal_size": 1}, TypeError, "'equal_size'"),
    ],
)
def test_dirichlet_rejects_bad_input(kwargs, error, match):
    args = {"num_clients": 10, "alpha": 0.5} | kwargs
    with pytest.raises(error, match=match):
        dirichlet_partition(balanced_labels(), **args)


def test_dirichlet_gives_up_after_max_tries_with_advice():
    with pytest.raises(ValueError, match="larger 'alpha'.*smaller 'min_size'"):
        dirichlet_partition(balanced_labels(), 10, 0.01, min_size=90, max_tries=3)


# ----------------------------------------------------------------------------- pathological


def test_pathological_by_hand():
    y = np.repeat(np.arange(4), 4)  # 4 classes x 4 samples, 4 clients x 2 classes
    parts = pathological_partition(y, 4, 2, seed=0)
    assert_exact_cover(parts, 16)
    counts = partition_stats(y, parts).to_numpy()
    # every client holds exactly 2 classes, 2 samples each; every class is held by 2 clients
    assert ((counts > 0).sum(axis=1) == 2).all()
    assert ((counts > 0).sum(axis=0) == 2).all()
    assert set(counts[counts > 0].tolist()) == {2}


def test_pathological_exact_classes_per_client():
    y = balanced_labels()
    parts = pathological_partition(y, 7, 3, seed=1)
    assert_exact_cover(parts, y.size)
    counts = partition_stats(y, parts).to_numpy()
    assert ((counts > 0).sum(axis=1) == 3).all()


@pytest.mark.parametrize(
    ("num_clients", "classes_per_client", "match"),
    [
        (5, 0, "'classes_per_client'"),
        (5, 11, "'classes_per_client'"),
        (3, 2, "'num_clients' x 'classes_per_client'"),
        (0, 2, "'num_clients'"),
    ],
)
def test_pathological_rejects_bad_input(num_clients, classes_per_client, match):
    with pytest.raises(ValueError, match=match):
        pathological_partition(balanced_labels(), num_clients, classes_per_client)


# ----------------------------------------------------------------------------- natural, stats


def test_natural_partition_by_hand():
    parts = natural_partition(np.array([2, 0, 2, 1]))
    assert [p.tolist() for p in parts] == [[1], [3], [0, 2]]
    with pytest.raises(ValueError, match="'site_ids'"):
        natural_partition(np.array([[0, 1]]))


def test_partition_stats_match_indices():
    y = np.array([0, 1, 1, 2, 2, 2])
    stats = partition_stats(y, [np.array([0, 3]), np.array([1, 2, 4, 5])], class_names="abc")
    assert isinstance(stats, pd.DataFrame)
    assert stats.to_numpy().tolist() == [[1, 0, 1], [0, 2, 2]]
    assert list(stats.columns) == ["a", "b", "c"]
    assert list(stats.index) == ["client 0", "client 1"]
    y = balanced_labels()
    parts = dirichlet_partition(y, 6, 0.4, seed=2)
    table = partition_stats(y, parts, 10).to_numpy()
    for k, idx in enumerate(parts):
        assert table[k].tolist() == np.bincount(y[idx], minlength=10).tolist()


def test_check_partition_rejects_duplicates_and_out_of_range():
    with pytest.raises(ValueError, match="more than one client"):
        check_partition([np.array([0, 1]), np.array([1])], 3)
    with pytest.raises(ValueError, match="outside"):
        check_partition([np.array([0, 3])], 3)


# ----------------------------------------------------------------------------- train / test


def test_stratified_split_counts_by_hand():
    # n = 10 -> 2 test; n = 3 -> round(0.6) = 1; n = 2 -> round(0.4) = 0; n = 1 -> 0 (keep train)
    y = np.array([0] * 10 + [1] * 3 + [2] * 2 + [3])
    train, test = stratified_split(y, 0.2, seed=0)
    assert np.bincount(y[test], minlength=4).tolist() == [2, 1, 0, 0]
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(y.size))
    # a present class always keeps one training sample
    _, test_all = stratified_split(np.array([0, 0]), 0.9)
    assert test_all.size == 1


def test_split_count_table_by_hand():
    train, test = split_count_table(np.array([[10, 1, 3, 2, 0]]), 0.2)
    assert test.tolist() == [[2, 0, 1, 0, 0]]
    assert train.tolist() == [[8, 1, 2, 2, 0]]


def _pool(n=60, num_classes=3):
    labels = torch.arange(n) % num_classes
    images = torch.rand(n, 1, 4, 4)
    return ArrayDataset(images, labels)


def test_federate_per_client_split():
    pool = _pool()
    parts = [np.arange(0, 30), np.arange(30, 60)]
    data = federate(pool, parts, test_frac=0.2, class_names=("a", "b", "c"))
    assert data.num_clients == 2 and data.class_names == ("a", "b", "c")
    # each client: 10 per class -> 2 test per class
    assert data.class_counts("test").tolist() == [[2, 2, 2], [2, 2, 2]]
    assert data.class_counts("train").tolist() == [[8, 8, 8], [8, 8, 8]]
    assert data.info["test_protocol"] == "per_client_split"
    train_rows = torch.cat([data.train[0].images, data.test[0].images])
    assert torch.equal(train_rows.sort(dim=0).values, pool.images[:30].sort(dim=0).values)


def test_federate_shared_balanced_test_set():
    pool, test = _pool(), _pool(9)
    data = federate(pool, [np.arange(0, 20), np.arange(25, 60)], test=test)
    assert data.test[0] is test and data.test[1] is test
    assert data.info["global_test"] is test
    assert [len(data.train[k]) for k in range(2)] == [20, 35]


def test_federate_rejects_bad_input():
    with pytest.raises(TypeError, match="'dataset'"):
        federate(np.zeros(3), [np.arange(3)])
    with pytest.raises(ValueError, match="more than one client"):
        federate(_pool(), [np.arange(5), np.arange(3, 8)])
    with pytest.raises(ValueError, match="'test_frac'"):
        federate(_pool(), [np.arange(5)], test_frac=1.0)


def test_proportional_test_indices_by_hand():
    # training counts (6, 3, 0), test set 4 per class: s = min(4/6, 4/3) = 2/3,
    # t = floor(2/3 * (6, 3, 0)) = (4, 2, 0); class 0 uses all its test images
    test_labels = np.repeat([0, 1, 2], 4)
    rows = proportional_test_indices([0] * 6 + [1] * 3, test_labels, seed=5)
    assert np.bincount(test_labels[rows], minlength=3).tolist() == [4, 2, 0]
    assert np.array_equal(rows, np.sort(rows)) and len(set(rows.tolist())) == 6
    again = proportional_test_indices([0] * 6 + [1] * 3, test_labels, seed=5)
    assert np.array_equal(rows, again)
    # limit case: training labels in the test set's own proportions take the whole test set
    assert len(proportional_test_indices(test_labels, test_labels)) == 12
    # a class absent from the test set is skipped: counts (2, 2) and test (0, 3) -> (0, 3)
    assert proportional_test_indices([0, 0, 1, 1], [1, 1, 1]).tolist() == [0, 1, 2]
    assert proportional_test_indices([2], [0, 1]).size == 0


def test_proportional_test_indices_rejects_bad_input():
    with pytest.raises(ValueError, match="'train_labels' must be 1-D"):
        proportional_test_indices(np.zeros((2, 2), int), [0])
    with pytest.raises(TypeError, match="'test_labels' must hold integers"):
        proportional_test_indices([0], [0.5])
    with pytest.raises(ValueError, match="'num_classes' must be > the largest label"):
        proportional_test_indices([0, 3], [0], num_classes=2)


def test_federate_proportional_local_test_sets():
    pool, test = _pool(), _pool(30)  # test: 10 per class
    parts = [np.arange(0, 6), np.flatnonzero(np.arange(60) % 3 == 0)[2:]]
    data = federate(pool, parts, test=test, local_test="proportional")
    # client 0 trains on classes (2, 2, 2): the whole test set; client 1 only on class 0
    assert data.class_counts("test").tolist() == [[10, 10, 10], [10, 0, 0]]
    assert data.info["test_protocol"] == "proportional"
    assert data.pooled_test() is test
    with pytest.raises(ValueError, match="'local_test'='proportional' samples each client's"):
        federate(pool, parts, local_test="proportional")
    with pytest.raises(ValueError, match="'local_test' must be one of 'split', 'proportional'"):
        federate(pool, parts, test=test, local_test="global")


def test_federate_keeps_lazy_datasets_lazy(tmp_path):
    from PIL import Image

    from fedlib.data.real import ImageFileDataset

    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        Image.new("L", (4, 4), 40 * i).save(paths[-1])
    lazy = ImageFileDataset(paths, [0, 1, 0, 1, 0, 1], image_size=4, channels=1)
    data = federate(lazy, [np.arange(3), np.arange(3, 6)], test_frac=0.4)
    assert isinstance(data.train[0], ImageFileDataset)  # file lists, nothing decoded
    held = sorted(p.name for p in data.train[1].paths + data.test[1].paths)
    assert held == ["3.png", "4.png", "5.png"] and len(data.test[1]) == 1  # class 1: 2 -> 1


def test_registry_proportional_sets_aside_a_balanced_global_test_set():
    from fedlib.data import load_dataset

    data = load_dataset("synthderm", partition="dirichlet", num_clients=3, alpha=1.0,
                        local_test="proportional", scale=0.05, image_size=28)
    global_test = data.pooled_test()
    counts = np.bincount(global_test.labels.numpy(), minlength=data.num_classes)
    assert len(set(counts.tolist())) == 1 and counts[0] >= 1  # balanced
    train_rows = torch.cat([data.train[k].images for k in data.client_ids()])
    assert not any(torch.equal(train_rows[i], global_test.images[0])
                   for i in range(len(train_rows)))  # held out from training
    for k in data.client_ids():
        n = data.class_counts("train")[k]
        t = data.class_counts("test")[k]
        scale = min(counts[c] / n[c] for c in range(len(n)) if n[c])
        assert t.tolist() == np.floor(scale * n + 1e-9).astype(int).tolist()
    with pytest.raises(ValueError, match="with partition 'sites' needs clients that share"):
        load_dataset("synthderm", local_test="proportional", scale=0.02, image_size=28)


# ----------------------------------------------------------------------------- figures


def test_heatmap_and_bars_show_the_counts():
    counts = np.array([[3, 0], [1, 4]])
    fig = client_class_heatmap(counts, ["a", "b"], ["s0", "s1"])
    assert np.asarray(fig.data[0].z).tolist() == [[3, 0], [1, 4]]
    assert list(fig.data[0].x) == ["a", "b"]
    bars = client_class_bars(counts, ["a", "b"], normalize=True)
    assert len(bars.data) == 2 and bars.layout.barmode == "stack"
    assert np.allclose(np.asarray(bars.data[1].y), [0.0, 0.8])
    with pytest.raises(ValueError, match="'class_names'"):
        client_class_heatmap(counts, ["a"])


def test_slider_figure_precomputes_every_state():
    y = balanced_labels(5, 40)
    fig = partition_slider_figure(y, [0.1, 1.0], [1, 10], num_clients=4, seed=0)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == [
        "IF=1, α=0.1", "IF=1, α=1", "IF=10, α=0.1", "IF=10, α=1",
    ]  # fmt: skip
    # the IF = 10 states hold the long-tailed total 40 + 22 + 12 + 7 + 4 = 85 images
    totals = [int(np.sum(s.args[0]["z"][0])) for s in steps]
    assert totals == [200, 200, 85, 85]
    expected = partition_stats(y, dirichlet_partition(y, 4, 0.1, min_size=0, seed=0)).to_numpy()
    assert np.array_equal(np.asarray(steps[0].args[0]["z"][0]), expected)
    with pytest.raises(ValueError, match="'alphas'"):
        partition_slider_figure(y, [0.0])
