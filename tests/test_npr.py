"""Pin the NPR maths (fednpr.md, "Unit tests that pin the maths" 2-8): the balanced assignment,
the sub-centroid refresh, the standardized max-cosine loss and the two lambda forms."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fedlib.methods.npr import (
    init_sub_centroids,
    npr_loss,
    npr_objective,
    npr_scores,
    random_assign,
    refresh_sub_centroids,
    sinkhorn_assign,
)

E = torch.eye(8, dtype=torch.float64)


def planted(noise: float = 0.01, per_cluster: int = 25, seed: int = 0):
    """Four clusters of ``per_cluster`` points around e1..e4 in R^8 (labels 0..3)."""
    g = torch.Generator().manual_seed(seed)
    centres = E[:4]
    points = centres.repeat_interleave(per_cluster, 0)
    points = points + noise * torch.randn(points.shape, generator=g, dtype=torch.float64)
    return points, torch.arange(4).repeat_interleave(per_cluster)


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two label vectors define the same groups (up to renaming)."""
    pairs = {(int(i), int(j)) for i, j in zip(a, b, strict=True)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


# --------------------------------------------------------------------------- assignment
def test_sinkhorn_recovers_planted_clusters_in_equal_groups():
    points, truth = planted()
    g = torch.Generator().manual_seed(1)
    seeds = E[[2, 0, 3, 1]] + 0.1 * torch.randn(4, 8, generator=g, dtype=torch.float64)
    similarities = F.normalize(points, dim=1) @ F.normalize(seeds, dim=1).T
    groups = sinkhorn_assign(similarities, eps=0.05, iters=3)
    assert torch.bincount(groups, minlength=4).tolist() == [25, 25, 25, 25]
    assert same_partition(groups, truth)


def test_sinkhorn_plan_has_the_equipartition_marginals():
    points, _ = planted()
    g = torch.Generator().manual_seed(1)
    seeds = E[:4] + 0.1 * torch.randn(4, 8, generator=g, dtype=torch.float64)
    similarities = F.normalize(points, dim=1) @ F.normalize(seeds, dim=1).T
    _, plan = sinkhorn_assign(similarities, iters=200, return_plan=True)
    rows, columns = plan.sum(1), plan.sum(0)
    assert float((rows - 1 / 100).abs().max()) < 1e-4
    assert float((columns - 1 / 4).abs().max()) < 1e-4


def test_sinkhorn_balances_where_the_nearest_sub_centroid_would_take_every_sample():
    """Sub-centroid 0 = normalize(e1 + e2 + e3 + e4) has cosine 0.5 with every cluster; sub-centroid
    j = 1..3 has cosine 0.45 with cluster j only. Nearest-centroid assignment puts all 100
    points on sub-centroid 0; the equipartition gives each cluster its own group."""
    points, truth = planted()
    bank = torch.stack([
        E[:4].sum(0) / 2,
        *(0.45 * E[j] + math.sqrt(1 - 0.45**2) * E[4 + j] for j in range(1, 4)),
    ])
    similarities = F.normalize(points, dim=1) @ bank.T
    assert torch.bincount(similarities.argmax(1), minlength=4).tolist() == [100, 0, 0, 0]
    groups = sinkhorn_assign(similarities)
    assert torch.bincount(groups, minlength=4).tolist() == [25, 25, 25, 25]
    assert torch.equal(groups, truth)  # cluster j -> sub-centroid j


def test_random_assign_ignores_the_similarities():
    similarities = torch.rand(30, 4, generator=torch.Generator().manual_seed(0))
    shuffled = similarities.flatten()[torch.randperm(120)].reshape(30, 4)
    first = random_assign(similarities, generator=torch.Generator().manual_seed(5))
    second = random_assign(shuffled, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    assert first.min() >= 0 and first.max() <= 3 and len(set(first.tolist())) > 1


# --------------------------------------------------------------------------- refresh
def test_sub_centroids_are_normalized_means_of_their_assigned_features():
    points, _ = planted(noise=0.3)
    labels = torch.zeros(100, dtype=torch.long)
    bank = init_sub_centroids(2, 4, 8, generator=torch.Generator().manual_seed(0)).double()
    new = refresh_sub_centroids(bank, 3.0 * points, labels)
    unit = F.normalize(points, dim=1)
    groups = sinkhorn_assign(unit @ F.normalize(bank[0], dim=1).T)
    for m in range(4):
        expected = F.normalize(unit[groups == m].mean(0), dim=0)
        torch.testing.assert_close(new[0, m], expected, atol=1e-12, rtol=0)
    assert torch.equal(new[1], bank[1])  # class 1 has no sample


def test_with_one_sub_centroid_the_refresh_is_the_normalized_class_mean():
    points, labels = planted(noise=0.3)
    bank = init_sub_centroids(4, 1, 8, generator=torch.Generator().manual_seed(0)).double()
    for assign in ("sinkhorn", "random"):
        new = refresh_sub_centroids(bank, points, labels, assign=assign)
        for c in range(4):
            mean = F.normalize(points[labels == c], dim=1).mean(0)
            torch.testing.assert_close(new[c, 0], F.normalize(mean, dim=0), atol=1e-12, rtol=0)


def test_classes_with_at_most_one_sample_keep_their_vectors_bit_for_bit():
    bank = init_sub_centroids(3, 2, 5, generator=torch.Generator().manual_seed(0))
    features = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 0, 0, 0, 0, 1])  # class 1 once, class 2 never
    new = refresh_sub_centroids(bank, features, labels)
    assert torch.equal(new[1], bank[1]) and torch.equal(new[2], bank[2])
    assert not torch.equal(new[0], bank[0])
    again = init_sub_centroids(3, 2, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(bank, again)  # the input is not modified


def test_an_empty_group_keeps_its_vector_or_becomes_zero():
    """Two identical features and K = 3: sub-centroid 0 (the nearest) takes both, under random
    assignment as well for this seed; groups 1 and 2 stay empty."""
    bank = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    features = torch.tensor([[1.0, 0.1], [1.0, 0.1]])
    labels = torch.zeros(2, dtype=torch.long)
    groups = sinkhorn_assign(F.normalize(features, dim=1) @ bank[0].T)
    empty = [m for m in range(3) if m not in groups.tolist()]
    assert empty
    keep = refresh_sub_centroids(bank, features, labels)
    zero = refresh_sub_centroids(bank, features, labels, empty_group="zero")
    for m in empty:
        assert torch.equal(keep[0, m], bank[0, m])
        assert torch.equal(zero[0, m], torch.zeros(2))


def test_momentum_blends_the_old_and_new_sub_centroids():
    points, labels = planted(noise=0.3)
    bank = init_sub_centroids(4, 1, 8, generator=torch.Generator().manual_seed(0)).double()
    fresh = refresh_sub_centroids(bank, points, labels)
    blended = refresh_sub_centroids(bank, points, labels, momentum=0.9)
    expected = F.normalize(0.9 * F.normalize(bank, dim=-1) + 0.1 * fresh, dim=-1)
    torch.testing.assert_close(blended, expected, atol=1e-12, rtol=0)


def test_initial_bank_is_seeded_and_small():
    a = init_sub_centroids(3, 4, 16, generator=torch.Generator().manual_seed(0))
    b = init_sub_centroids(3, 4, 16, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, 4, 16) and torch.equal(a, b)
    assert 0.01 < float(a.std()) < 0.03


# --------------------------------------------------------------------------- loss
def test_standardized_scores_and_loss_of_one_hot_scores():
    """s = (1, 0, 0, 0): mean 1/4, biased variance 3/16, so s~ = (0.75, -0.25 x 3)/sqrt(3/16 + 1e-5)
    = (1.7320, -0.5773, -0.5773, -0.5773); L = log(1 + 3 e^{-2.3094}) = 0.2608."""
    bank = torch.eye(4)[:, None, :]
    features = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    scores = npr_scores(features, bank)
    torch.testing.assert_close(
        scores, torch.tensor([[1.7320, -0.5773, -0.5773, -0.5773]]), atol=1e-4, rtol=0
    )
    assert float(npr_loss(features, torch.tensor([0]), bank)) == pytest.approx(0.2608, abs=1e-4)


def test_npr_loss_on_a_tiny_batch_equals_the_hand_computation():
    """d = 3, C = 3, K = 2. Sub-centroids (scaled on purpose; normalized at use):
    class 0 {3 e1, -e2}, class 1 {e2, -2 e1}, class 2 {e3, -e3}. Features f1 = 2 e1 (y = 0) and
    f2 = 0.5 e2 (y = 2), normalized to e1 and e2.

    Max-cosine scores: f1 -> s = (max(1, 0), max(0, -1), max(0, 0)) = (1, 0, 0);
    f2 -> s = (max(0, -1), max(1, 0), 0) = (0, 1, 0).
    Both have mean 1/3 and biased variance 2/9; with sigma = sqrt(2/9 + 1e-5) the top score
    standardizes to (2/3)/sigma and the others to -(1/3)/sigma, a gap of 1/sigma.
    L1 = -log softmax(s~1)_0 = log(1 + 2 e^{-1/sigma});
    L2 = -log softmax(s~2)_2 = log(e^{1/sigma} + 2) = L1 + 1/sigma.
    sigma = 0.471415, 1/sigma = 2.121273, e^{-1/sigma} = 0.119879, L1 = log(1.239758) = 0.214916.
    Batch mean: L1 + 1/(2 sigma) = 0.214916 + 1.060636 = 1.275552.
    """
    sigma = math.sqrt(2 / 9 + 1e-5)
    expected = math.log(1 + 2 * math.exp(-1 / sigma)) + 1 / (2 * sigma)
    assert expected == pytest.approx(1.275552, abs=1e-6)
    e1, e2, e3 = torch.eye(3, dtype=torch.float64)
    bank = torch.stack([
        torch.stack([3 * e1, -e2]), torch.stack([e2, -2 * e1]), torch.stack([e3, -e3])
    ])
    features = torch.stack([2 * e1, 0.5 * e2])
    loss = npr_loss(features, torch.tensor([0, 2]), bank)
    assert float(loss) == pytest.approx(expected, abs=1e-12)


def test_npr_loss_ignores_the_scale_of_the_features():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(10, 6, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 3, (10,), generator=g)
    bank = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    base = npr_loss(features, targets, bank)
    for scale in (1e-3, 0.5, 7.0, 1e4):
        assert float(npr_loss(scale * features, targets, bank)) == pytest.approx(
            float(base), abs=1e-12
        )


def test_npr_gradients_reach_the_backbone_only():
    g = torch.Generator().manual_seed(0)
    backbone = torch.nn.Linear(5, 4)
    bank = torch.randn(3, 2, 4, generator=g).requires_grad_(True)
    x, y = torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)
    npr_loss(backbone(x), y, bank).backward()
    assert bank.grad is None
    assert float(backbone.weight.grad.abs().sum()) > 0


def test_lambda_forms_paper_and_code():
    """paper: L + lambda L_NPR; code: L + L_NPR + lambda, i.e. the gradient of lambda = 1."""
    w = torch.tensor([0.3, -0.2], requires_grad=True)
    base, npr = (w**2).sum(), (2 * w).sum()
    paper = npr_objective(base, npr, npr_lambda=0.05)
    assert paper.item() == pytest.approx(0.13 + 0.05 * 0.2)
    code = npr_objective(base, npr, npr_lambda=0.05, form="code")
    assert code.item() == pytest.approx(0.13 + 0.2 + 0.05)
    (grad_code,) = torch.autograd.grad(code, w, retain_graph=True)
    (grad_one,) = torch.autograd.grad(npr_objective(base, npr, npr_lambda=1.0), w)
    assert torch.equal(grad_code, grad_one)
    assert torch.equal(npr_objective(base, npr, npr_lambda=0.0), base)


# --------------------------------------------------------------------------- validation
BANK = torch.zeros(3, 2, 4)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: sinkhorn_assign(torch.ones(4)), ValueError, r"'similarities' must have shape"),
        (lambda: sinkhorn_assign([[1.0]]), TypeError, r"'similarities' must be a torch.Tensor"),
        (lambda: sinkhorn_assign(torch.ones(2, 2, dtype=torch.long)), TypeError,
         r"'similarities' must be a floating-point tensor"),
        (lambda: sinkhorn_assign(torch.ones(2, 2), eps=0.0), ValueError,
         r"'eps' must be a float > 0"),
        (lambda: sinkhorn_assign(torch.ones(2, 2), iters=0), ValueError,
         r"'iters' must be an int >= 1"),
        (lambda: random_assign(torch.ones(3)), ValueError, r"random_assign: 'similarities'"),
        (lambda: init_sub_centroids(3, 0, 4), ValueError, r"'K' must be an int >= 1, got 0"),
        (lambda: init_sub_centroids(0, 2, 4), ValueError, r"'num_classes' must be an int >= 1"),
        (lambda: init_sub_centroids(3, 2, 0), ValueError, r"'dim' must be an int >= 1"),
        (lambda: refresh_sub_centroids(torch.zeros(3, 4), torch.ones(2, 4), torch.zeros(2)),
         ValueError, r"'bank' must have shape \(classes, K, feature_dim\)"),
        (lambda: refresh_sub_centroids(BANK, torch.ones(2, 5), torch.zeros(2, dtype=torch.long)),
         ValueError, r"'features' must have feature_dim 4"),
        (lambda: refresh_sub_centroids(BANK, torch.ones(2, 4), torch.zeros(2)),
         TypeError, r"'labels' must be an integer tensor"),
        (lambda: refresh_sub_centroids(BANK, torch.ones(2, 4), torch.zeros(3, dtype=torch.long)),
         ValueError, r"'labels' must have shape \(2,\)"),
        (lambda: refresh_sub_centroids(BANK, torch.ones(2, 4), torch.tensor([0, 3])),
         ValueError, r"'labels' must lie in \[0, 2\]"),
        (lambda: refresh_sub_centroids(BANK, torch.ones(2, 4), torch.tensor([0, 1]),
                                       assign="kmeans"), ValueError, r"'assign' must be one of"),
        (lambda: refresh_sub_centroids(BANK, torch.ones(2, 4), torch.tensor([0, 1]),
                                       momentum=1.0), ValueError, r"'momentum' must be a float"),
        (lambda: refresh_sub_centroids(BANK, torch.ones(2, 4), torch.tensor([0, 1]),
                                       empty_group="drop"), ValueError, r"'empty_group' must be"),
        (lambda: npr_scores(torch.ones(2, 5), BANK), ValueError, r"'bank' must have feature_dim 5"),
        (lambda: npr_loss(torch.ones(2, 4), torch.tensor([0, 1, 2]), BANK), ValueError,
         r"npr_loss: 'labels' must have shape \(2,\)"),
        (lambda: npr_objective(torch.ones(()), torch.ones(()), npr_lambda=-1.0), ValueError,
         r"'npr_lambda' must be a float >= 0"),
        (lambda: npr_objective(torch.ones(()), torch.ones(()), npr_lambda=1.0, form="sum"),
         ValueError, r"'form' must be one of 'paper', 'code'"),
    ],
)
def test_bad_inputs_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_assignments_are_deterministic():
    points, labels = planted(noise=0.3)
    bank = init_sub_centroids(4, 3, 8, generator=torch.Generator().manual_seed(0)).double()
    for assign, seed in itertools.product(("sinkhorn", "random"), (0, 1)):
        runs = [
            refresh_sub_centroids(bank, points, labels, assign=assign,
                                  generator=torch.Generator().manual_seed(seed))
            for _ in range(2)
        ]
        assert torch.equal(runs[0], runs[1])
