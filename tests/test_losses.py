"""Pin the maths of fedlib.losses with hand-computed values and limit cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedlib.losses import (
    LOSSES,
    balanced_softmax_loss,
    consistency_loss,
    cross_entropy,
    fedlc_logits,
    fedlc_loss,
    fedrs_scale,
    focal_loss,
    gradient_match_distance,
    kd_loss,
    linear_ce_gradients,
    make_loss,
    moon_contrastive_loss,
    soft_dice_loss,
)


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 2, 4])
    return logits, targets


# --------------------------------------------------------------------------- CE family


def test_cross_entropy_matches_hand_value():
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0]], dtype=torch.float64)
    assert cross_entropy(logits, torch.tensor([0])).item() == pytest.approx(math.log(2.0))


def test_focal_gamma_zero_equals_ce(batch):
    logits, targets = batch
    assert torch.allclose(focal_loss(logits, targets, gamma=0.0), cross_entropy(logits, targets))


def test_focal_hand_computed_two_samples_three_classes():
    # Sample 1: softmax([ln 2, 0, 0]) = (1/2, 1/4, 1/4), y = 0 -> p_y = 1/2.
    # Sample 2: softmax([0, ln 3, 0]) = (1/5, 3/5, 1/5), y = 2 -> p_y = 1/5.
    logits = torch.tensor([[math.log(2), 0, 0], [0, math.log(3), 0]], dtype=torch.float64)
    targets = torch.tensor([0, 2])
    expected = ((0.5**2) * math.log(2) + (0.8**2) * math.log(5)) / 2  # 0.6016636
    assert focal_loss(logits, targets, gamma=2.0).item() == pytest.approx(expected, abs=1e-12)
    # gamma = 1 (the FedNPR/FCA code's value)
    expected_g1 = (0.5 * math.log(2) + 0.8 * math.log(5)) / 2
    assert focal_loss(logits, targets).item() == pytest.approx(expected_g1, abs=1e-12)


def test_focal_alpha_scalar_and_per_class_weights():
    logits = torch.tensor([[math.log(2), 0, 0], [0, math.log(3), 0]], dtype=torch.float64)
    targets = torch.tensor([0, 2])
    base = [0.5 * math.log(2), 0.8 * math.log(5)]
    scalar = focal_loss(logits, targets, gamma=1.0, alpha=0.25).item()
    assert scalar == pytest.approx(0.25 * sum(base) / 2, abs=1e-12)
    per_class = focal_loss(logits, targets, gamma=1.0, alpha=[2.0, 0.0, 0.5]).item()
    assert per_class == pytest.approx((2.0 * base[0] + 0.5 * base[1]) / 2, abs=1e-12)


# Lin et al. sweep these values of gamma (Table 1a of the focal-loss paper).
FOCAL_GAMMAS = [0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]


@pytest.mark.parametrize("gamma", FOCAL_GAMMAS)
def test_focal_gradient_finite_when_p_true_rounds_to_one(gamma):
    # softmax([50, 0])_0 = 1 - 2e-22 rounds to 1 in float32: 1 - p_y = 0, where (1 - p)^γ has
    # an infinite derivative for γ < 1. The exact gradient is about 1e-22, i.e. 0.
    for loss_fn in (lambda z, y: focal_loss(z, y, gamma=gamma), make_loss("focal", gamma=gamma)):
        logits = torch.tensor([[50.0, 0.0]], requires_grad=True)
        loss = loss_fn(logits, torch.tensor([0]))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
        assert torch.allclose(logits.grad, torch.zeros(1, 2), atol=1e-6)


def test_focal_gradient_hand_computed_for_gamma_below_one():
    # Two classes, d = z_0 - z_1, p = sigmoid(d), y = 0, L = -(1 - p)^γ log p:
    # dL/dz_0 = -dL/dz_1 = γ p (1 - p)^γ log p - (1 - p)^(γ + 1). At d = ln 3, p = 3/4, γ = 1/2.
    logits = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64, requires_grad=True)
    focal_loss(logits, torch.tensor([0]), gamma=0.5).backward()
    p, gamma = 0.75, 0.5
    expected = gamma * p * (1 - p) ** gamma * math.log(p) - (1 - p) ** (gamma + 1)
    assert logits.grad[0].tolist() == pytest.approx([expected, -expected], abs=1e-12)
    assert expected == pytest.approx(-0.178940, abs=1e-6)


def test_focal_alpha_float_balances_two_classes_as_lin_et_al():
    # Binary: α for class 1 (foreground), 1 - α for class 0. Logits zero: p_y = 1/2 for both.
    logits = torch.zeros(2, 2, dtype=torch.float64)
    loss = focal_loss(logits, torch.tensor([0, 1]), gamma=2.0, alpha=0.25).item()
    term = 0.5**2 * math.log(2)
    assert loss == pytest.approx((0.75 * term + 0.25 * term) / 2, abs=1e-12)
    only_foreground = focal_loss(logits, torch.tensor([1, 1]), gamma=2.0, alpha=0.25).item()
    assert only_foreground == pytest.approx(0.25 * term, abs=1e-12)


def test_focal_alpha_passes_through_make_loss(batch):
    logits, targets = batch
    weights = [2.0, 0.0, 0.5, 1.0, 3.0]
    built = make_loss("focal", gamma=0.5, alpha=weights)
    assert torch.equal(built(logits, targets), focal_loss(logits, targets, 0.5, weights))
    binary = make_loss("focal", gamma=2.0, alpha=0.25)
    z, y = logits[:, :2], targets % 2
    assert torch.equal(binary(z, y), focal_loss(z, y, gamma=2.0, alpha=0.25))
    # one built loss serves other dtypes and class counts (weights built once for each)
    assert torch.equal(binary(z.float(), y), focal_loss(z.float(), y, gamma=2.0, alpha=0.25))
    assert torch.equal(binary(logits, targets), focal_loss(logits, targets, 2.0, 0.25))


def test_built_losses_never_read_tensor_values(batch, monkeypatch):
    # Reading a tensor's value on the host (bool, item, float, tolist) waits for an
    # accelerator; a built loss does none of it per call.
    logits, targets = batch
    prior = torch.tensor([1.0, 0.0, 3.0, 2.0, 9.0], dtype=torch.float64)
    built = [make_loss(name) for name in LOSSES] + [make_loss("focal", alpha=[1, 2, 3, 4, 5])]
    for loss_fn in built:
        loss_fn(logits, targets, prior=prior)  # first call builds focal weights once

    def forbidden(*args, **kwargs):
        raise AssertionError("a tensor value was read on the host")

    for name in ("__bool__", "item", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for loss_fn in built:
        loss_fn(logits, targets, prior=prior)


def test_bsm_uniform_prior_equals_ce(batch):
    logits, targets = batch
    uniform = torch.full((5,), 0.2, dtype=torch.float64)
    bsm = balanced_softmax_loss(logits, targets, uniform)
    assert torch.allclose(bsm, cross_entropy(logits, targets), atol=1e-12)


def test_bsm_accepts_counts_like_frequencies(batch):
    logits, targets = batch
    counts = [10, 0, 30, 5, 55]
    frequencies = np.asarray(counts) / 100
    assert torch.allclose(
        balanced_softmax_loss(logits, targets, counts),
        balanced_softmax_loss(logits, targets, frequencies),
        atol=1e-12,
    )


def test_bsm_absent_class_hand_computed():
    # prior counts (3, 0, 1) -> π = (0.75, 0, 0.25); offsets log(π + 1e-9); logits zero.
    logits = torch.zeros(1, 3, dtype=torch.float64)
    denominator = 1 + 3e-9
    present = balanced_softmax_loss(logits, torch.tensor([0]), [3, 0, 1]).item()
    assert present == pytest.approx(-math.log((0.75 + 1e-9) / denominator), abs=1e-12)
    absent = balanced_softmax_loss(logits, torch.tensor([1]), [3, 0, 1]).item()
    assert absent == pytest.approx(-math.log(1e-9 / denominator), abs=1e-9)  # ≈ 20.7233
    assert absent == pytest.approx(20.7233, abs=1e-4)


def test_logit_adjust_tau_zero_equals_ce(batch):
    logits, targets = batch
    loss_fn = make_loss("logit_adjust", tau=0.0)
    prior = [1, 0, 3, 2, 9]
    assert torch.equal(loss_fn(logits, targets, prior=prior), cross_entropy(logits, targets))


def test_logit_adjust_tau_scales_the_offset():
    logits = torch.zeros(2, 3, dtype=torch.float64)
    loss = make_loss("logit_adjust", tau=0.5)(logits, torch.tensor([0, 1]), prior=[1, 1, 2])
    # offsets 0.5·log(1/4), 0.5·log(1/4), 0.5·log(1/2) -> p_0 = 0.5 / (1 + √0.5)
    assert loss.item() == pytest.approx(math.log(2 + math.sqrt(2)), abs=1e-8)


def test_bsm_gradient_flows_to_logits_only():
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    prior = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    balanced_softmax_loss(logits, torch.tensor([0, 1, 2, 0]), prior).backward()
    assert logits.grad is not None and prior.grad is None


# --------------------------------------------------------------------------- registry


def test_registry_names():
    assert set(LOSSES) == {"ce", "focal", "bsm", "logit_adjust"}
    assert [LOSSES[n].needs_prior for n in ("ce", "focal", "bsm", "logit_adjust")] == [
        False, False, True, True
    ]


def test_registry_calls_uniformly_and_ignores_prior_where_unused(batch):
    logits, targets = batch
    prior = [1, 2, 3, 4, 5]
    ce = cross_entropy(logits, targets)
    assert torch.equal(make_loss("ce")(logits, targets, prior=prior), ce)
    assert torch.equal(make_loss("ce")(logits, targets), ce)
    assert torch.equal(
        make_loss("focal", gamma=2.0)(logits, targets, prior=prior),
        focal_loss(logits, targets, gamma=2.0),
    )
    assert torch.equal(
        make_loss("bsm")(logits, targets, prior=prior),
        balanced_softmax_loss(logits, targets, prior),
    )
    assert torch.equal(
        make_loss("logit_adjust")(logits, targets, prior=prior),
        make_loss("bsm")(logits, targets, prior=prior),
    )


def test_registry_repr_lists_options():
    assert repr(make_loss("focal", gamma=2.0)) == "ClassificationLoss('focal', gamma=2.0)"


# --------------------------------------------------------------------------- FedRS


def test_fedrs_scale_hard_and_soft():
    assert fedrs_scale([10, 5, 0], alpha=0.5, mode="hard").tolist() == [1.0, 1.0, 0.5]
    assert fedrs_scale([10, 5, 0], alpha=0.5, mode="soft").tolist() == [1.0, 0.75, 0.5]
    assert fedrs_scale(np.array([3, 3]), alpha=0.1).dtype == torch.float32


# --------------------------------------------------------------------------- FedLC


def test_fedlc_ce_calibrated_equal_counts_equals_ce(batch):
    logits, targets = batch
    loss = fedlc_loss(logits, targets, [7, 7, 7, 7, 7], tau=1.0)
    assert torch.allclose(loss, cross_entropy(logits, targets), atol=1e-12)


def test_fedlc_absent_class_pushed_down_by_hundred_tau():
    logits = torch.zeros(1, 2, dtype=torch.float64)
    calibrated = fedlc_logits(logits, [1, 0], tau=0.5)
    assert calibrated[0].tolist() == pytest.approx([-0.5, -50.0])


def test_fedlc_paper_form_hand_computed():
    # counts (1, 16, 81) -> n^{-1/4} = (1, 1/2, 1/3); tau = 1, logits zero -> z' = -(1, 1/2, 1/3)
    logits = torch.zeros(2, 3, dtype=torch.float64)
    targets = torch.tensor([0, 2])
    first = 1.0 + math.log(math.exp(-1 / 2) + math.exp(-1 / 3))   # y = 0, j in {1, 2}
    second = 1 / 3 + math.log(math.exp(-1.0) + math.exp(-1 / 2))  # y = 2, j in {0, 1}
    paper = fedlc_loss(logits, targets, [1, 16, 81], form="paper").item()
    assert paper == pytest.approx((first + second) / 2, abs=1e-12)
    # The common form keeps y in the denominator.
    every = math.log(math.exp(-1) + math.exp(-1 / 2) + math.exp(-1 / 3))
    common = fedlc_loss(logits, targets, [1, 16, 81], form="ce_calibrated").item()
    assert common == pytest.approx(((1 + every) + (1 / 3 + every)) / 2, abs=1e-12)


def test_fedlc_paper_form_is_unbounded_below():
    logits = torch.tensor([[50.0, 0.0]], dtype=torch.float64)
    assert fedlc_loss(logits, torch.tensor([0]), [1, 1], form="paper").item() == pytest.approx(
        -50.0
    )


# --------------------------------------------------------------------------- MOON


def test_moon_aligned_global_orthogonal_previous():
    r = torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    r_prev = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    loss = moon_contrastive_loss(r, r.clone(), r_prev, temperature=0.5)
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), abs=1e-6)
    assert round(loss.item(), 4) == 0.1269


def test_moon_gradient_reaches_r_only():
    r = torch.randn(3, 4, requires_grad=True)
    r_global = torch.randn(3, 4, requires_grad=True)
    r_prev = torch.randn(3, 4, requires_grad=True)
    moon_contrastive_loss(r, r_global, r_prev).backward()
    assert r.grad is not None and r_global.grad is None and r_prev.grad is None


# --------------------------------------------------------------------------- distillation


def test_kd_of_equal_logits_is_entropy_with_zero_gradient():
    teacher = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], dtype=torch.float64)
    student = teacher.clone().requires_grad_(True)
    loss = kd_loss(student, teacher)
    p = F.softmax(teacher, dim=1)
    entropy = -(p * p.log()).sum(1).mean()
    assert loss.item() == pytest.approx(entropy.item(), abs=1e-12)
    loss.backward()
    assert torch.allclose(student.grad, torch.zeros_like(student.grad), atol=1e-12)


def test_kd_temperature_squares_scale():
    student = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[4.0, 0.0]], dtype=torch.float64)
    # T = 2: teacher probs softmax([2, 0]); student probs (1/2, 1/2); loss = T² · log 2.
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(4 * math.log(2))


def test_consistency_fca_fixed_example():
    z_fed = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    z_per = torch.tensor([[0.0, 2.0, 0.0], [0.0, 1.0, 0.0]])
    assert consistency_loss(z_fed, z_per).item() == pytest.approx(0.68048, abs=1e-4)
    assert consistency_loss(z_fed, z_per, mode="code").item() == pytest.approx(-0.37361, abs=1e-4)


def test_consistency_batchmean_zero_for_equal_logits():
    z = torch.tensor([[0.3, -1.0, 2.0], [1.0, 1.0, 0.0]], requires_grad=True)
    loss = consistency_loss(z, z.detach().clone())
    loss.backward()
    assert abs(loss.item()) < 1e-7
    assert torch.allclose(z.grad, torch.zeros_like(z.grad), atol=1e-7)


def test_consistency_code_gradient_is_minus_teacher_over_bc():
    # In "code" mode d loss / d p_fed = -p̄'/(B·C); through the softmax Jacobian the logit
    # gradient is p ⊙ (g - <p, g>) with g = -p̄'/(B·C).
    z_fed = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64,
                         requires_grad=True)
    z_per = torch.tensor([[0.0, 2.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    consistency_loss(z_fed, z_per, mode="code").backward()
    p = F.softmax(z_fed.detach(), 1)
    g = -(F.softmax(z_per, 1) + 1e-11) / 6
    expected = p * (g - (p * g).sum(1, keepdim=True))
    assert torch.allclose(z_fed.grad, expected, atol=1e-12)


def test_consistency_detach_teacher_blocks_teacher_gradient():
    z_fed = torch.randn(2, 3, requires_grad=True)
    z_per = torch.randn(2, 3, requires_grad=True)
    consistency_loss(z_fed, z_per).backward()
    assert z_per.grad is None and z_fed.grad is not None
    z_per2 = torch.randn(2, 3, requires_grad=True)
    consistency_loss(z_fed, z_per2, detach_teacher=False).backward()
    assert z_per2.grad is not None


# --------------------------------------------------------------------------- soft Dice


def test_soft_dice_identical_nonempty_and_both_empty_are_zero():
    y = torch.zeros(2, 1, 8, 8)
    y[0, 0, 2:5, 2:5] = 1
    y[1, 0, 0, 0] = 1
    assert soft_dice_loss(y, y).item() == pytest.approx(0.0, abs=1e-7)
    empty = torch.zeros(1, 1, 4, 4)
    assert soft_dice_loss(empty, empty).item() == 0.0


def test_soft_dice_empty_prediction_hundred_pixels():
    y = torch.zeros(1, 1, 20, 20, dtype=torch.float64)
    y.view(-1)[:100] = 1
    p = torch.zeros_like(y)
    assert soft_dice_loss(p, y).item() == pytest.approx(1 - 1e-4 / (100 + 1e-4), abs=1e-9)


def test_soft_dice_from_logits_and_batch_mean():
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    eps = 1e-4
    d0 = (2 * 0.5 + eps) / (1.0 + 1.0 + eps)
    d1 = (2 * 1.0 + eps) / (1.0 + 2.0 + eps)
    assert soft_dice_loss(p, y).item() == pytest.approx(1 - (d0 + d1) / 2, abs=1e-12)
    logits = torch.logit(p.clamp(1e-12, 1 - 1e-12))
    assert soft_dice_loss(logits, y, from_logits=True).item() == pytest.approx(
        1 - (d0 + d1) / 2, abs=1e-9
    )


# --------------------------------------------------------------------------- gradient matching


def test_gradient_match_distance_limit_cases():
    g = [torch.tensor([[1.0, 2.0], [-3.0, 0.5], [0.2, 0.1]]), torch.tensor([0.3, -0.4, 1.0])]
    assert float(gradient_match_distance(g, g)) == pytest.approx(0.0, abs=1e-5)
    assert float(gradient_match_distance(g, [3 * t for t in g])) == pytest.approx(0.0, abs=1e-5)
    assert float(gradient_match_distance(g, [-t for t in g])) == pytest.approx(8.0, abs=1e-5)
    # one row orthogonal (cos 0) and the rest identical: distance 1
    h = [g[0].clone(), g[1]]
    h[0][0] = torch.tensor([-2.0, 1.0])
    assert float(gradient_match_distance(g, h)) == pytest.approx(1.0, abs=1e-5)


def test_gradient_match_distance_leading_dimensions_add_rows():
    generator = torch.Generator().manual_seed(0)
    a = [torch.randn(4, 3, 5, generator=generator), torch.randn(4, 3, generator=generator)]
    b = [torch.randn(4, 3, 5, generator=generator), torch.randn(4, 3, generator=generator)]
    per_item = sum(
        gradient_match_distance([a[0][i], a[1][i]], [b[0][i], b[1][i]]) for i in range(4)
    )
    assert torch.allclose(gradient_match_distance(a, b), per_item, atol=1e-5)
    # zero rows do not divide by zero: cos = 0, distance 1 per row
    zeros = [torch.zeros(2, 3)]
    assert float(gradient_match_distance(zeros, zeros)) == 2.0


def test_closed_form_classifier_gradients_match_autograd():
    g = torch.Generator().manual_seed(0)
    features, labels = torch.randn(7, 4, generator=g), torch.tensor([0, 2, 1, 1, 0, 2, 2])
    w = torch.randn(3, 4, generator=g).requires_grad_(True)
    b = torch.randn(3, generator=g).requires_grad_(True)
    expected = torch.autograd.grad(F.cross_entropy(F.linear(features, w, b), labels), [w, b])
    for got, want in zip(linear_ce_gradients(features, labels, w, b), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def test_closed_form_classifier_gradients_hand_computed():
    # One sample f = (1, 2), W = 0, no bias: softmax = (1/2, 1/2), y = 0, error = (-1/2, 1/2).
    grad_w, grad_b = linear_ce_gradients(
        torch.tensor([[1.0, 2.0]]), torch.tensor([0]), torch.zeros(2, 2)
    )
    assert grad_w.tolist() == [[-0.5, -1.0], [0.5, 1.0]]
    assert grad_b.tolist() == [-0.5, 0.5]


# --------------------------------------------------------------------------- validation messages

_LOGITS = torch.zeros(2, 3)
_TARGETS = torch.tensor([0, 1])

_VALIDATION_CASES = [
    ("focal_gamma", lambda: focal_loss(_LOGITS, _TARGETS, gamma=-1.0), ValueError,
     r"focal_loss: 'gamma' must be a float >= 0, got -1\.0\."),
    ("focal_alpha_range", lambda: focal_loss(_LOGITS, _TARGETS, alpha=1.5), ValueError,
     r"focal_loss: 'alpha' must be a float >= 0 and <= 1, got 1\.5\."),
    ("focal_alpha_type", lambda: focal_loss(_LOGITS, _TARGETS, alpha="x"), TypeError,
     r"focal_loss: 'alpha' must be None, a float in \[0, 1\] or per-class weights"),
    ("focal_alpha_length", lambda: focal_loss(_LOGITS, _TARGETS, alpha=[1.0, 1.0]), ValueError,
     r"focal_loss: 'alpha' must have shape \(3,\), one entry per class, got \(2,\)\."),
    ("bsm_tau", lambda: balanced_softmax_loss(_LOGITS, _TARGETS, [1, 1, 1], tau=-0.5),
     ValueError, r"balanced_softmax_loss: 'tau' must be a float >= 0, got -0\.5\."),
    ("bsm_eps", lambda: balanced_softmax_loss(_LOGITS, _TARGETS, [1, 1, 1], eps=-1e-9),
     ValueError, r"balanced_softmax_loss: 'eps' must be a float >= 0, got -1e-09\."),
    ("bsm_prior_missing", lambda: make_loss("bsm")(_LOGITS, _TARGETS), ValueError,
     r"balanced_softmax_loss: 'prior' is required"),
    ("bsm_prior_shape", lambda: balanced_softmax_loss(_LOGITS, _TARGETS, [1, 1]), ValueError,
     r"balanced_softmax_loss: 'prior' must have shape \(3,\), one entry per class"),
    ("bsm_prior_negative", lambda: balanced_softmax_loss(_LOGITS, _TARGETS, [1, -1, 1]),
     ValueError, r"balanced_softmax_loss: 'prior' must hold finite values >= 0"),
    ("bsm_prior_zero_sum", lambda: balanced_softmax_loss(_LOGITS, _TARGETS, [0, 0, 0]),
     ValueError, r"balanced_softmax_loss: 'prior' must have a positive sum"),
    ("logits_type", lambda: cross_entropy([[0.0, 1.0]], _TARGETS), TypeError,
     r"cross_entropy: 'logits' must be a torch.Tensor, got list\."),
    ("logits_dtype", lambda: cross_entropy(torch.zeros(2, 3, dtype=torch.long), _TARGETS),
     TypeError, r"cross_entropy: 'logits' must be a floating-point tensor"),
    ("logits_shape", lambda: cross_entropy(torch.zeros(3), _TARGETS), ValueError,
     r"cross_entropy: 'logits' must have shape \(batch, classes\), got \(3,\)\."),
    ("targets_dtype", lambda: cross_entropy(_LOGITS, torch.tensor([0.0, 1.0])), TypeError,
     r"cross_entropy: 'targets' must be an integer tensor of class indices"),
    ("targets_shape", lambda: cross_entropy(_LOGITS, torch.tensor([0, 1, 2])), ValueError,
     r"cross_entropy: 'targets' must have shape \(2,\) to match the batch, got \(3,\)\."),
    ("make_loss_name", lambda: make_loss("bce"), ValueError,
     r"make_loss: 'name' must be one of 'ce', 'focal', 'bsm', 'logit_adjust', got 'bce'\."),
    ("make_loss_option", lambda: make_loss("ce", gamma=2.0), ValueError,
     r"make_loss: loss 'ce' does not accept option 'gamma'; accepted options: none\."),
    ("make_loss_bsm_tau", lambda: make_loss("bsm", tau=0.5), ValueError,
     r"make_loss: loss 'bsm' does not accept option 'tau'; accepted options: 'eps'\."),
    ("make_loss_value", lambda: make_loss("focal", gamma=-2), ValueError,
     r"focal_loss: 'gamma' must be a float >= 0, got -2\."),
    ("make_loss_alpha", lambda: make_loss("focal", alpha=2.0), ValueError,
     r"focal_loss: 'alpha' must be a float >= 0 and <= 1, got 2\.0\."),
    ("make_loss_alpha_values", lambda: make_loss("focal", alpha=[1.0, -1.0]), ValueError,
     r"focal_loss: 'alpha' must hold finite values >= 0, got \[1\.0, -1\.0\]\."),
    ("make_loss_alpha_type", lambda: make_loss("focal", alpha="high"), TypeError,
     r"focal_loss: 'alpha' must be None, a float in \[0, 1\] or per-class weights"),
    ("built_alpha_length", lambda: make_loss("focal", alpha=[1.0, 1.0])(_LOGITS, _TARGETS),
     ValueError, r"focal_loss: 'alpha' must have shape \(3,\), one entry per class"),
    ("built_prior_shape", lambda: make_loss("bsm")(_LOGITS, _TARGETS, prior=torch.ones(2)),
     ValueError, r"balanced_softmax_loss: 'prior' must have shape \(3,\), one entry per class, "
     r"got \(2,\)\."),
    ("built_prior_list_negative", lambda: make_loss("bsm")(_LOGITS, _TARGETS, prior=[1, -1, 1]),
     ValueError, r"balanced_softmax_loss: 'prior' must hold finite values >= 0"),
    ("built_targets_shape", lambda: make_loss("focal")(_LOGITS, torch.tensor([0])), ValueError,
     r"focal_loss: 'targets' must have shape \(2,\) to match the batch, got \(1,\)\."),
    ("gradient_match_count", lambda: gradient_match_distance([_LOGITS], []), ValueError,
     r"gradient_match_distance: 'a' and 'b' must hold as many tensors, at least one, "
     r"got 1 and 0\."),
    ("gradient_match_shape", lambda: gradient_match_distance([_LOGITS], [torch.zeros(3, 2)]),
     ValueError, r"gradient_match_distance: tensors must have matching shapes with at least one "
     r"dimension, got \(2, 3\) and \(3, 2\)\."),
    ("fedrs_alpha", lambda: fedrs_scale([1, 0], alpha=1.5), ValueError,
     r"fedrs_scale: 'alpha' must be a float >= 0 and <= 1, got 1\.5\."),
    ("fedrs_mode", lambda: fedrs_scale([1, 0], mode="medium"), ValueError,
     r"fedrs_scale: 'mode' must be one of 'hard', 'soft', got 'medium'\."),
    ("fedrs_counts_sum", lambda: fedrs_scale([0, 0]), ValueError,
     r"fedrs_scale: 'class_counts' must have a positive sum"),
    ("fedrs_counts_type", lambda: fedrs_scale(3), TypeError,
     r"fedrs_scale: 'class_counts' must be a tensor, array or sequence"),
    ("fedlc_form", lambda: fedlc_loss(_LOGITS, _TARGETS, [1, 1, 1], form="both"), ValueError,
     r"fedlc_loss: 'form' must be one of 'ce_calibrated', 'paper', got 'both'\."),
    ("fedlc_tau", lambda: fedlc_loss(_LOGITS, _TARGETS, [1, 1, 1], tau=-1.0), ValueError,
     r"fedlc_logits: 'tau' must be a float >= 0, got -1\.0\."),
    ("fedlc_floor", lambda: fedlc_loss(_LOGITS, _TARGETS, [1, 1, 1], count_floor=0.0),
     ValueError, r"fedlc_logits: 'count_floor' must be a float > 0, got 0\.0\."),
    ("fedlc_paper_one_class", lambda: fedlc_loss(torch.zeros(2, 1), _TARGETS * 0, [1],
                                                 form="paper"), ValueError,
     r"fedlc_loss: form 'paper' needs 'logits' with at least 2 classes"),
    ("moon_temperature", lambda: moon_contrastive_loss(_LOGITS, _LOGITS, _LOGITS,
                                                       temperature=0.0), ValueError,
     r"moon_contrastive_loss: 'temperature' must be a float > 0, got 0\.0\."),
    ("moon_shape", lambda: moon_contrastive_loss(_LOGITS, torch.zeros(2, 4), _LOGITS),
     ValueError, r"moon_contrastive_loss: 'r_global' must have the shape of 'r' \(2, 3\)"),
    ("kd_temperature", lambda: kd_loss(_LOGITS, _LOGITS, temperature=-1.0), ValueError,
     r"kd_loss: 'temperature' must be a float > 0, got -1\.0\."),
    ("kd_shape", lambda: kd_loss(_LOGITS, torch.zeros(2, 4)), ValueError,
     r"kd_loss: 'teacher_logits' must have the shape of 'student_logits' \(2, 3\)"),
    ("consistency_mode", lambda: consistency_loss(_LOGITS, _LOGITS, mode="sum"), ValueError,
     r"consistency_loss: 'mode' must be one of 'batchmean', 'code', got 'sum'\."),
    ("dice_eps", lambda: soft_dice_loss(torch.zeros(1, 4), torch.zeros(1, 4), eps=0.0),
     ValueError, r"soft_dice_loss: 'eps' must be a float > 0, got 0\.0\."),
    ("dice_probs_range", lambda: soft_dice_loss(torch.full((1, 4), 2.0), torch.zeros(1, 4)),
     ValueError, r"soft_dice_loss: 'probs' must hold probabilities in \[0, 1\]"),
    ("dice_target_range", lambda: soft_dice_loss(torch.zeros(1, 4), torch.full((1, 4), 2.0)),
     ValueError, r"soft_dice_loss: 'target' must hold values in \[0, 1\]"),
    ("dice_shape", lambda: soft_dice_loss(torch.zeros(1, 4), torch.zeros(1, 5)), ValueError,
     r"soft_dice_loss: 'probs' and 'target' must share one shape"),
]


@pytest.mark.parametrize(
    ("make_call", "error", "message"),
    [case[1:] for case in _VALIDATION_CASES],
    ids=[case[0] for case in _VALIDATION_CASES],
)
def test_validation_message(make_call, error, message):
    with pytest.raises(error, match=message):
        make_call()
