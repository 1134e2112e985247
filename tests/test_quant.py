"""The maths of fedlib.quant (SDQ spec, "Unit tests that pin the maths"), hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fedlib.models import SmallCNN
from fedlib.quant import (
    InterpolationSearch,
    QuantTraining,
    SDQSearch,
    average_bits,
    bin_regularizer,
    compare,
    compression_ratio,
    deployable_state_dict,
    dorefa_weight,
    findings,
    layer_table,
    quant_layers,
    quant_summary,
    quantize,
    quantize_model,
    round_ste,
    set_mode,
    summarize,
)
from fedlib.quant.digits import digits_split
from fedlib.quant.layers import QuantLinear, interpolated_weight, mixed_weight, stochastic_mask
from fedlib.quant.quantizers import (
    act_quant,
    binary_weight,
    normalized_weight,
    quantize_weight,
    quantize_weight_pair,
)
from fedlib.quant.report import count_macs, model_size_bytes
from fedlib.quant.search import commit, expected_average_bits, meet_budget
from fedlib.quant.training import recalibrate_batchnorm

W = torch.tensor([-1.0, -0.2, 0.1, 0.5, 2.0], dtype=torch.float64)


# --------------------------------------------------------------------------- quantizers
def test_dorefa_and_binary_values_by_hand():
    """Spec case 1: tanh(w) / (2 max|tanh w|) + 1/2 = (0.105, 0.398, 0.552, 0.740, 1)."""
    torch.testing.assert_close(dorefa_weight(W, 2), torch.tensor(
        [-1, -1 / 3, 1 / 3, 1 / 3, 1], dtype=torch.float64))
    torch.testing.assert_close(dorefa_weight(W, 3), torch.tensor(
        [-5 / 7, -1 / 7, 1 / 7, 3 / 7, 1], dtype=torch.float64))
    torch.testing.assert_close(binary_weight(W), torch.tensor(
        [-0.76, -0.76, 0.76, 0.76, 0.76], dtype=torch.float64))
    torch.testing.assert_close(quantize_weight(W, 1, "formula"), torch.tensor(
        [-1.0, -1.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    assert torch.equal(quantize_weight(W, 32), W)


@pytest.mark.parametrize("bits", range(1, 9))
def test_a_b_bit_quantizer_has_at_most_2_to_the_b_values_in_range(bits):
    # tanh(w) uniform in (-0.9, 0.9): every level of Q_b is reached
    w = torch.atanh(1.8 * torch.rand(4000, generator=torch.Generator().manual_seed(bits)) - 0.9)
    w[:7] = 0.0  # sign(0) := +1 keeps the 1-bit case at two values
    q = quantize_weight(w, bits)
    assert q.unique().numel() <= 2**bits
    if bits >= 2:
        assert q.min() >= -1 and q.max() <= 1
        assert q.unique().numel() == 2**bits
    else:
        assert torch.equal(q[:7], torch.full((7,), float(w.abs().mean())))


def test_round_ste_rounds_forward_and_has_gradient_exactly_one():
    x = torch.tensor([-1.7, -0.5, 0.2, 0.5, 1.5, 2.49], requires_grad=True)
    y = round_ste(x)
    assert y.tolist() == torch.round(x.detach()).tolist()
    y.backward(torch.arange(6.0))
    assert x.grad.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_binary_weight_gradient_is_the_identity():
    w = W.clone().requires_grad_(True)
    binary_weight(w).backward(torch.tensor([1.0, 2, 3, 4, 5], dtype=torch.float64))
    assert w.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_act_quant_levels_and_clip_gradient():
    x = torch.tensor([-0.5, 0.1, 0.4, 0.9, 1.3], requires_grad=True)
    y = act_quant(x, 2)
    torch.testing.assert_close(y, torch.tensor([0.0, 0.0, 1 / 3, 1.0, 1.0]))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # identity inside [0, 1], 0 outside
    assert act_quant(x, 32) is x


def test_quantize_weight_pair_equals_two_calls():
    for hi, lo in ((3, 2), (2, 1), (8, 7)):
        pair = quantize_weight_pair(W, hi, lo)
        assert torch.equal(pair[0], quantize_weight(W, hi))
        assert torch.equal(pair[1], quantize_weight(W, lo))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: dorefa_weight(W, 0), "dorefa_weight: 'bits' must be an int >= 1 and <= 31"),
        (lambda: quantize_weight(W, 2, "sign"), "'binary_mode' must be one of 'sign_mean'"),
        (lambda: act_quant(W, 33), "act_quant: 'bits' must be an int >= 1 and <= 32"),
    ],
)
def test_quantizer_validation(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- SDQ's choice
@pytest.mark.parametrize("estimator", ["gumbel_st", "bernoulli_st"])
@pytest.mark.parametrize("seed", range(5))
def test_beta_one_gives_the_higher_bitwidth_exactly_and_zero_the_lower(estimator, seed):
    """Spec case 4 (clamp parametrisation, so beta can be exactly 0 or 1)."""
    layer = QuantLinear(6, 4, candidates=(3, 2))
    layer.mode, layer.dbp_param, layer.estimator = "search", "clamp", estimator
    layer.generator = torch.Generator().manual_seed(seed)
    for beta, bits in ((1.0, 3), (0.0, 2)):
        layer.set_beta(beta)
        for _ in range(5):
            assert torch.equal(layer.quantized_weight(), quantize_weight(layer.weight, bits))


@pytest.mark.parametrize("estimator", ["gumbel_st", "bernoulli_st"])
def test_the_hard_choice_is_bernoulli_beta(estimator):
    """Spec case 5: 10,000 seeded draws at beta = 0.3 average 0.30 +- 0.015."""
    g = torch.Generator().manual_seed(0)
    beta = torch.tensor(0.3)
    draws = torch.stack([stochastic_mask(beta, estimator=estimator, generator=g)
                         for _ in range(10_000)])
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(draws.mean()) - 0.3) <= 0.015


def test_expected_bits_are_differentiable_with_the_formula_gradient():
    """Spec case 6: dE[b_bar]/dbeta_l = n_l (b_hi - b_lo) / sum n."""
    model = nn.Sequential(QuantLinear(10, 10, candidates=(8, 6, 2)),
                          QuantLinear(10, 3, candidates=(8, 6, 2)))
    layers = quant_layers(model)
    layers["0"].rung.fill_(1)  # pair (6, 2)
    for layer in layers.values():
        layer.mode, layer.dbp_param = "search", "clamp"
        layer.set_beta(0.4)
    weights = {n: float(layer.num_weights) for n, layer in layers.items()}
    expected = expected_average_bits(layers, weights)
    torch.testing.assert_close(float(expected.detach()), (100 * (0.4 * 6 + 0.6 * 2)
                                                 + 30 * (0.4 * 8 + 0.6 * 6)) / 130)
    expected.backward()
    assert math.isclose(float(layers["0"].theta.grad), 100 * (6 - 2) / 130, rel_tol=1e-6)
    assert math.isclose(float(layers["1"].theta.grad), 30 * (8 - 6) / 130, rel_tol=1e-6)


def test_expected_bits_gradient_through_the_sigmoid():
    layer = QuantLinear(4, 2, candidates=(4, 2))
    layer.mode = "search"
    layer.set_beta(0.25)
    layer.expected_bits().backward()
    assert math.isclose(float(layer.theta.grad), 0.25 * 0.75 * (4 - 2), rel_tol=1e-6)


def test_bernoulli_st_gradient_is_the_difference_of_the_quantized_weights():
    """Spec case 7: L = sum c * w_q gives dL/dbeta = sum c * (Q_hi - Q_lo)."""
    w = torch.randn(20, generator=torch.Generator().manual_seed(1))
    c = torch.randn(20, generator=torch.Generator().manual_seed(2))
    beta = torch.tensor(0.6, requires_grad=True)
    m = stochastic_mask(beta, estimator="bernoulli_st", generator=torch.Generator())
    hi, lo = quantize_weight(w, 4), quantize_weight(w, 3)
    (c * mixed_weight(m, hi, lo)).sum().backward()
    torch.testing.assert_close(beta.grad, (c * (hi - lo)).sum())


def test_gumbel_st_gradient_is_the_relaxed_sample_derivative():
    """d m / d logit = s (1 - s) / tau with s = sigmoid((logit + g) / tau)."""
    theta = torch.tensor(0.3, requires_grad=True)
    g = torch.Generator().manual_seed(3)
    u = torch.rand((), generator=torch.Generator().manual_seed(3))
    u = 1e-6 + (1 - 2e-6) * u
    m = stochastic_mask(torch.sigmoid(theta), tau=0.5, generator=g, logit=theta)
    m.backward()
    s = torch.sigmoid((0.3 + torch.log(u) - torch.log1p(-u)) / 0.5)
    torch.testing.assert_close(theta.grad, s * (1 - s) / 0.5)


def test_search_mode_evaluates_at_the_exported_bitwidth():
    layer = QuantLinear(5, 3, candidates=(4, 2))
    layer.mode = "search"
    layer.set_beta(0.7)
    layer.eval()
    assert layer.final_bits() == 4
    assert torch.equal(layer.quantized_weight(), quantize_weight(layer.weight, 4))
    layer.set_beta(0.3)
    assert layer.final_bits() == 2


# --------------------------------------------------------------------------- budget and ladder
def test_average_bits_and_compression_by_hand():
    """Spec case 8: (100 weights, 8 bits) and (900, 2 bits): 2.6 bits, 12.31x."""
    avg = average_bits({"a": 8, "b": 2}, {"a": 100, "b": 900})
    assert avg == pytest.approx(2.6)
    assert compression_ratio(avg) == pytest.approx(12.3077, abs=1e-4)


def test_commit_moves_only_layers_below_threshold_and_never_below_the_ladder():
    """Spec case 9."""
    model = nn.Sequential(*[QuantLinear(3, 3, candidates=(3, 2, 1)) for _ in range(3)])
    layers = quant_layers(model)
    for layer, beta in zip(layers.values(), (0.4, 0.6, 0.1), strict=True):
        layer.mode = "search"
        layer.set_beta(beta)
    layers["2"].rung.fill_(1)  # already on the last pair (2, 1)
    moved = commit(layers, threshold=0.5, beta_init=0.75)
    assert moved == ["0"]
    assert [layer.pair for layer in layers.values()] == [(2, 1), (3, 2), (2, 1)]
    assert float(layers["0"].beta().detach()) == pytest.approx(0.75)
    assert float(layers["2"].beta().detach()) == pytest.approx(0.1)  # stays, exports the lowest
    assert layers["2"].final_bits() == 1
    for _ in range(5):
        commit(layers, threshold=0.99, beta_init=0.75)
    assert all(int(layer.rung) <= 1 for layer in layers.values())
    assert min(layer.final_bits(0.99) for layer in layers.values()) == 1


def test_meet_budget_takes_the_smallest_sufficient_step_else_the_lowest_priority():
    weights = {"small": 100.0, "mid": 300.0, "big": 600.0}
    # 4, 3, 2 bits: 2.5 average; one step of "mid" (3 -> 2) reaches 2.2, "big" 1.9.
    bits, forced = meet_budget({"small": 4, "mid": 3, "big": 2}, weights, 2.2, (4, 3, 2, 1),
                               {"small": 0.9, "mid": 0.8, "big": 0.6})
    assert forced == ["mid"] and bits == {"small": 4, "mid": 2, "big": 2}
    # target 1.5: no single step suffices, so the lowest priority ("big") goes first.
    bits, forced = meet_budget({"small": 4, "mid": 3, "big": 2}, weights, 1.5, (4, 3, 2, 1),
                               {"small": 0.9, "mid": 0.8, "big": 0.6})
    assert forced[0] == "big" and average_bits(bits, weights) <= 1.5
    same, none = meet_budget({"a": 2}, {"a": 1.0}, 3.0, (4, 2), {"a": 0.5})
    assert same == {"a": 2} and none == []


class _TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.body(x))


def _toy_data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.2 * torch.rand(n, 1, 6, 6, generator=g)
    x[y == 0, :, :3] += 0.6
    x[y == 1, :, 3:] += 0.6
    return x, y


@pytest.mark.parametrize("target", [1.5, 2.0, 3.0])
@pytest.mark.parametrize("cls", [SDQSearch, InterpolationSearch])
def test_exported_strategy_meets_the_budget(cls, target):
    torch.manual_seed(0)
    model = quantize_model(_TinyNet(), candidates=(4, 3, 2, 1))
    search = cls(target_bits=target, candidates=(4, 3, 2, 1), max_search_steps=30,
                 commit_every=5, batch_size=16, bit_lr=0.05).fit(model, _toy_data(), seed=0)
    weights = {n: layer.num_weights for n, layer in quant_layers(model).items()}
    assert average_bits(search.strategy_, weights) <= target + 1e-9
    assert set(search.strategy_.values()) <= {4, 3, 2, 1}
    assert {layer.mode for layer in quant_layers(model).values()} == {"fixed"}
    assert {"step", "layer", "bits", "expected_bits"} <= set(search.trace_.columns)
    assert len(search.losses_) == search.steps_


def test_search_is_deterministic_for_a_seed():
    def run(seed):
        torch.manual_seed(0)
        model = quantize_model(_TinyNet(), candidates=(4, 3, 2, 1))
        return SDQSearch(target_bits=2.0, candidates=(4, 3, 2, 1), max_search_steps=20,
                         commit_every=5, batch_size=16).fit(model, _toy_data(), seed=seed)

    a, b = run(0), run(0)
    assert a.strategy_ == b.strategy_ and np.array_equal(a.losses_, b.losses_)
    assert not np.array_equal(a.losses_, run(1).losses_)


def test_bitops_budget_weights_layers_by_macs():
    model = quantize_model(_TinyNet(), candidates=(4, 2))
    search = SDQSearch(target_bits=4.0, candidates=(4, 2), budget="bitops", max_search_steps=2,
                       batch_size=16).fit(model, _toy_data(), seed=0)
    # conv: 36 positions x 4 outputs x 9 = 1296 MACs; head 4 x 3 = 12 per example
    assert search.weights_ == {"body.0": 1296.0, "head": 12.0}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target_bits": 0.5}, "SDQSearch: 'target_bits' must be a float >= 1"),
        ({"target_bits": 1.0, "candidates": (8, 4)}, "'target_bits' \\(1.0\\) must be >= the"),
        ({"candidates": (8, 8)}, "'candidates' must be a non-empty sequence of distinct ints"),
        ({"dbp_estimator": "reinforce"}, "'dbp_estimator' must be one of 'gumbel_st'"),
        ({"dbp_param": "tanh"}, "'dbp_param' must be one of 'sigmoid'"),
        ({"beta_init": 1.0}, "'beta_init' must be a float > 0 and < 1"),
        ({"commit_threshold": 0.0}, "'commit_threshold' must be a float > 0 and < 1"),
        ({"tau_end": 0.0}, "'tau_end' must be a float > 0"),
        ({"budget": "latency"}, "'budget' must be one of 'avg_bits', 'bitops'"),
        ({"lambda_b": -1.0}, "'lambda_b' must be a float >= 0"),
        ({"commit_every": 0}, "'commit_every' must be an int >= 1"),
        ({"search_task_loss": "mse"}, "'search_task_loss' must be one of 'ce', 'kd'"),
    ],
)
def test_sdq_search_validation(options, message):
    with pytest.raises(ValueError, match=message):
        SDQSearch(**options)


def test_interpolation_search_needs_consecutive_candidates():
    with pytest.raises(ValueError, match="consecutive integers, got \\(8, 4, 2\\)"):
        InterpolationSearch(candidates=(8, 4, 2))


def test_search_needs_quantized_layers_and_matching_candidates():
    with pytest.raises(ValueError, match="SDQSearch: 'model' has no quantized layer"):
        SDQSearch().fit(_TinyNet(), _toy_data())
    with pytest.raises(ValueError, match="has candidates \\(4, 2\\), the search"):
        SDQSearch().fit(quantize_model(_TinyNet(), candidates=(4, 2)), _toy_data())


# --------------------------------------------------------------------------- interpolation
def test_interpolation_integer_bits_are_exact_and_halfway_is_the_mean():
    """Spec case 11."""
    for b in (1, 2, 5, 8):
        q = interpolated_weight(W, torch.tensor(float(b), dtype=torch.float64), max_bits=8)
        assert torch.equal(q, quantize_weight(W, b))
    half = interpolated_weight(W, torch.tensor(2.5, dtype=torch.float64), max_bits=8)
    torch.testing.assert_close(half, (quantize_weight(W, 2) + quantize_weight(W, 3)) / 2)


def test_interpolation_gradient_in_the_bitwidth_at_an_integer():
    bits = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.0], dtype=torch.float64)
    (c * interpolated_weight(W, bits, max_bits=8)).sum().backward()
    torch.testing.assert_close(bits.grad, (c * (quantize_weight(W, 4) - quantize_weight(W, 3)))
                               .sum())


# --------------------------------------------------------------------------- bin regularizer
def _on_levels(bits):
    """Weights whose w_n sit exactly on the levels k / (2^b - 1) (max|tanh w| = 0.5)."""
    levels = 2**bits - 1
    t = 0.5 * (2 * torch.arange(levels + 1, dtype=torch.float64) / levels - 1)
    return torch.atanh(t.repeat(3))


@pytest.mark.parametrize("mode", ["br", "occupancy", "per_bin_norm"])
@pytest.mark.parametrize("bits", [1, 2, 3])
def test_bin_regularizer_is_zero_on_the_levels(mode, bits):
    """Spec case 10."""
    assert float(bin_regularizer(_on_levels(bits), bits, mode)) < 1e-12


def test_bin_regularizer_by_hand():
    """w_n = (0.105, 0.398, 0.552, 0.740, 1) at 2 bits: bins {0}, {1}, {2: two}, {3}."""
    w_n = normalized_weight(W)
    levels = torch.tensor([0, 1 / 3, 2 / 3, 2 / 3, 1], dtype=torch.float64)
    pair = w_n[2:4]
    expected = ((w_n[0] - 0) ** 2 + (w_n[1] - 1 / 3) ** 2 + (pair.mean() - 2 / 3) ** 2
                + pair.var(unbiased=False) + 0)
    torch.testing.assert_close(bin_regularizer(W, 2), expected)
    torch.testing.assert_close(bin_regularizer(W, 2, "per_bin_norm"), expected / 4)
    mse = ((w_n - levels) ** 2).mean()
    torch.testing.assert_close(bin_regularizer(W, 2, "occupancy"), mse, atol=1e-7, rtol=0)
    p = torch.tensor([0.2, 0.2, 0.4, 0.2], dtype=torch.float64)
    entropy = -(p * torch.log2(p)).sum()
    torch.testing.assert_close(bin_regularizer(W, 2, "entropy_bonus", gamma_h=0.5),
                               expected - 0.5 * entropy / 2)


def test_bin_regularizer_pulls_weights_towards_their_levels():
    w = torch.randn(200, generator=torch.Generator().manual_seed(0), requires_grad=True)
    before = float(bin_regularizer(w, 2, "occupancy").detach())
    optimizer = torch.optim.SGD([w], lr=20.0)  # per-weight gradients scale as 1 / |S_k|
    for _ in range(50):
        optimizer.zero_grad()
        bin_regularizer(w, 2).backward()
        optimizer.step()
    assert float(bin_regularizer(w, 2, "occupancy").detach()) < 0.25 * before


def test_bin_regularizer_validation():
    with pytest.raises(ValueError, match="bin_regularizer: 'mode' must be one of 'br'"):
        bin_regularizer(W, 2, "entropy")
    with pytest.raises(ValueError, match="bin_regularizer: 'bits' must be an int >= 1"):
        bin_regularizer(W, 0)


# --------------------------------------------------------------------------- layers and models
def test_quantize_model_copies_weights_and_leaves_the_original():
    net = SmallCNN(1, 4, width=2)
    q = quantize_model(net)
    layers = quant_layers(q)
    assert list(layers) == ["body.0", "body.4", "body.8", "head"]
    assert [layer.quantize_input for layer in layers.values()] == [False, True, True, True]
    x = torch.rand(3, 1, 8, 8)
    net.eval(), q.eval()
    torch.testing.assert_close(q(x), net(x))  # mode "fp": the same function
    assert not any(isinstance(m, QuantLinear) for m in net.modules())
    inner = quantize_model(net, quantize_first_last=False)
    assert list(quant_layers(inner)) == ["body.4", "body.8"]


def test_set_mode_fixed_needs_every_layer():
    q = quantize_model(SmallCNN(1, 4, width=2))
    with pytest.raises(ValueError, match="missing \\['head'\\]"):
        set_mode(q, "fixed", bits={"body.0": 2, "body.4": 2, "body.8": 2})
    with pytest.raises(ValueError, match="mode 'fixed' needs 'bits'"):
        set_mode(q, "fixed")
    with pytest.raises(ValueError, match="set_mode: 'mode' must be one of 'fp'"):
        set_mode(q, "int8")


def test_deployable_state_dict_reproduces_the_quantized_model():
    net = SmallCNN(1, 4, width=2)
    q = quantize_model(net)
    set_mode(q, "fixed", bits={"body.0": 4, "body.4": 2, "body.8": 1, "head": 3})
    state = deployable_state_dict(q)
    assert set(state) == set(net.state_dict())
    plain = SmallCNN(1, 4, width=2)
    plain.load_state_dict(state)
    x = torch.rand(5, 1, 8, 8)
    q.eval(), plain.eval()
    assert torch.equal(q(x), plain(x))
    assert state["body.8.weight"].unique().numel() <= 2


def test_report_counts_macs_bytes_and_bitops():
    q = quantize_model(_TinyNet(), candidates=(4, 2))
    set_mode(q, "fixed", bits={"body.0": 4, "head": 2})
    assert count_macs(q, torch.rand(1, 1, 6, 6)) == {"body.0": 1296, "head": 12}
    # conv 36 weights at 4 bits = 18 bytes + 4; head 12 at 2 bits = 3 + 4; head bias 3 x 4;
    # BN weight, bias, running mean, running var 4 x 4 x 4 = 64
    assert model_size_bytes(q) == 18 + 4 + 3 + 4 + 12 + 64
    summary = quant_summary(q, torch.rand(1, 1, 6, 6))
    assert summary["average_bits"] == pytest.approx((36 * 4 + 12 * 2) / 48)
    assert summary["fp32_size_bytes"] == 4 * (36 + 12 + 3 + 16)
    assert summary["bitops"] == 1296 * 4 * 32 + 12 * 2 * 32
    table = layer_table(q, torch.rand(1, 1, 6, 6))
    assert table["bits"].tolist() == [4, 2] and table["weights"].tolist() == [36, 12]


def test_recalibrated_batchnorm_statistics_are_the_data_statistics():
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2))
    x, _ = _toy_data(20)
    recalibrate_batchnorm(net, (x, torch.zeros(20)), batch_size=20)
    with torch.no_grad():
        h = net[0](x)
    torch.testing.assert_close(net[1].running_mean, h.mean(dim=(0, 2, 3)))
    assert net[1].momentum == 0.1


# --------------------------------------------------------------------------- stage 2, pipeline
def test_quantize_uniform_and_sdq_end_to_end():
    torch.manual_seed(0)
    teacher = _TinyNet()
    QuantTraining(loss="ce", lambda_e=0.0, epochs=3, batch_size=16).fit(teacher, _toy_data())
    uniform = quantize(teacher, _toy_data(), method="uniform", bits=2,
                       training={"epochs": 1, "batch_size": 16})
    assert uniform.strategy == {"body.0": 2, "head": 2} and uniform.search is None
    sdq = quantize(teacher, _toy_data(), method="sdq", bits=3.0, candidates=(4, 3, 2),
                   search={"max_search_steps": 10, "commit_every": 5},
                   training={"epochs": 1, "batch_size": 16})
    weights = {n: layer.num_weights for n, layer in quant_layers(sdq.model).items()}
    assert average_bits(sdq.strategy, weights) <= 3.0
    assert len(sdq.training.losses_) == 3  # 48 examples, batch 16, one epoch
    with pytest.raises(ValueError, match="quantize: 'method' must be one of 'sdq'"):
        quantize(teacher, _toy_data(), method="hawq")
    with pytest.raises(ValueError, match="QuantTraining: loss 'kd' needs a 'teacher'"):
        QuantTraining().fit(quantize_model(teacher), _toy_data())


def test_compare_runs_every_method_and_findings_speak_per_seed():
    torch.manual_seed(0)
    teacher = _TinyNet()
    QuantTraining(loss="ce", lambda_e=0.0, epochs=2, batch_size=16).fit(teacher, _toy_data())
    result = compare(teacher, _toy_data(), _toy_data(seed=1), target_bits=3.0, uniform_bits=(2,),
                     seeds=(0, 1), candidates=(4, 3, 2),
                     search={"max_search_steps": 6, "commit_every": 3},
                     training={"epochs": 1, "batch_size": 16})
    table = result.table
    assert list(dict.fromkeys(table["method"])) == [
        "full precision", "full precision, fine-tuned", "uniform 2-bit", "interpolation MPQ",
        "SDQ", "SDQ w/o EBR", "SDQ w/o KD", "SDQ w/o EBR, KD"]
    assert (table.groupby("method")["seed"].nunique() == 2).all()
    # the SDQ variants share their seed's strategy
    for seed in (0, 1):
        strategies = {tuple(result.results[(m, seed)].strategy.values())
                      for m in ("SDQ", "SDQ w/o EBR", "SDQ w/o KD", "SDQ w/o EBR, KD")}
        assert len(strategies) == 1
    assert table.loc[table["method"] == "uniform 2-bit", "compression_ratio"].tolist() == [16, 16]
    summary = summarize(table)
    assert summary.loc["SDQ", ("seeds", "")] == 2
    lines = findings(table)
    assert lines[0].startswith("SDQ's strategies average ")
    assert any(line.startswith("H1 (SDQ above uniform 2-bit): ") for line in lines)
    assert any(line.startswith("H5 (distillation helps): ") for line in lines)
    one = findings(table[table["seed"] == 0])
    assert any("untested (one seed)" in line for line in one)


def test_figures_build_from_a_search_and_a_table():
    from fedlib.quant.viz import accuracy_bits_figure, search_figure, weight_histogram_figure

    torch.manual_seed(0)
    model = quantize_model(_TinyNet(), candidates=(4, 3, 2, 1))
    search = SDQSearch(target_bits=2.0, candidates=(4, 3, 2, 1), max_search_steps=10,
                       commit_every=5, batch_size=16).fit(model, _toy_data())
    fig = search_figure(search.trace_, target_bits=2.0)
    assert len(fig.layout.sliders[0].steps) == search.trace_["step"].nunique()
    hist = weight_histogram_figure({"a": torch.randn(50), "b": torch.randn(50)}, 2)
    assert len(hist.data) == 2 and len(hist.layout.shapes) == 4  # one line per level
    table = pd.DataFrame({"method": ["full precision", "SDQ", "SDQ"], "seed": [0, 0, 1],
                          "accuracy": [0.9, 0.8, 0.85], "average_bits": [32.0, 2.0, 1.8]})
    assert [t.name for t in accuracy_bits_figure(table).data] == ["SDQ"]


def test_digits_split_is_stratified_and_scaled():
    train, test, names = digits_split(seed=0)
    assert len(train) + len(test) == 1797 and len(test) == 450
    assert names == tuple(str(d) for d in range(10))
    assert train.images.shape[1:] == (1, 8, 8)
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    share = torch.bincount(test.labels, minlength=10) / torch.bincount(
        torch.cat([train.labels, test.labels]), minlength=10)
    assert float((share - 0.25).abs().max()) < 0.01  # stratified: a quarter of every class
    with pytest.raises(ValueError, match="digits_split: 'test_fraction' must be a float > 0"):
        digits_split(test_fraction=0.0)
