"""Protocol v2: what the round commit, the side channel, the new options and the new baselines
guarantee. Hand-computed values are worked out in the docstrings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from toy_federation import blobs, tiny_cnn

from fedlib.core import ClientState, GlobalState, Simulation
from fedlib.core.algorithm import GLOBAL_COUNTS, LocalContext
from fedlib.core.protocol import ClientReply, RoundMessage
from fedlib.data import ArrayDataset, FederatedDataset
from fedlib.evaluation import evaluate, evaluate_run
from fedlib.methods import (
    SCAFFOLD,
    Ditto,
    FedAdam,
    FedAvg,
    FedAvgFT,
    FedAvgM,
    FedBN,
    FedYogi,
    get_method,
)
from fedlib.methods.fedbn import norm_keys


def run(method, rounds=2, data=None, **kwargs) -> Simulation:
    sim = Simulation(method, tiny_cnn, data or blobs(), num_rounds=rounds, progress=False,
                     **kwargs)
    sim.run()
    return sim


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class NaNOnce(FedAvg):
    """Client 0's loss is NaN in round 2 only."""

    def local_loss(self, model, batch, ctx):
        loss = super().local_loss(model, batch, ctx)
        return loss * float("nan") if (ctx.client_id, ctx.round) == (0, 1) else loss


class FailsInRoundTwo(Ditto):
    """Client 2 raises in round 2, after clients 0 and 1 have trained."""

    def before_local_training(self, model, ctx):
        if (ctx.client_id, ctx.round) == (2, 1):
            raise RuntimeError("disk full")
        super().before_local_training(model, ctx)


# ------------------------------------------------------------------ bug 8a: saved optimizer state
def test_previewing_local_updates_does_not_change_later_rounds():
    """Regression: loading a client's saved Adam moments used to alias them, so a preview's
    training moved the stored moments and the next real round differed."""
    method = FedAvg(optimizer="adam", lr=0.01, optimizer_state="persist")
    plain = run(method, rounds=2)
    previewed = run(method, rounds=1)
    previewed.local_updates()
    previewed.num_rounds = 2
    previewed.run()
    assert same(plain.state_.weights, previewed.state_.weights)


def test_a_client_that_failed_once_recovers():
    """Regression: a skipped client's NaN step used to write NaN into its saved moments in place,
    so it failed in every later round."""
    method = NaNOnce(optimizer="adam", lr=0.01, optimizer_state="persist")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = run(method, rounds=3, on_client_error="skip")
    assert list(sim.history_.rounds["failed_clients"]) == [0, 1, 0]
    moments = sim.client_states_[0].optimizer["state"]
    assert all(torch.isfinite(v).all() for s in moments.values() for v in s.values())


def test_an_aborted_round_leaves_every_client_state_as_it_was():
    sim = Simulation(FailsInRoundTwo(lr=0.1), tiny_cnn, blobs(), num_rounds=2, progress=False)
    sim.num_rounds = 1
    sim.run()
    before = {k: dict(sim.client_states_[k].method["personal_model"]) for k in range(3)}
    sim.num_rounds = 2
    with pytest.raises(RuntimeError, match="client 2 failed in round 2: disk full"):
        sim.run()
    for k in range(3):
        assert same(sim.client_states_[k].method["personal_model"], before[k])
    assert sim.state_.round == 1


def test_undeclared_client_state_entries_are_refused():
    class Sloppy(FedAvg):
        def after_local_training(self, model, ctx):
            ctx.state.method["notes"] = torch.zeros(1)

    with pytest.raises(RuntimeError, match=r"'client_state_fields' \(declared: none\)"):
        run(Sloppy(), rounds=1)


# ------------------------------------------------------------------ options
def test_global_prior_comes_from_the_clients_reported_counts():
    data = blobs(absent={0: 2})
    sim = run(FedAvg(loss="bsm", la_prior="global"), rounds=1, data=data)
    message = sim.algorithm.message_for(sim.state_, 0)
    total = sum(np.bincount(data.train[k].labels.numpy(), minlength=3) for k in range(3))
    assert message.side[GLOBAL_COUNTS].tolist() == total.tolist()
    ctx = sim.algorithm.local_context(
        sim.model_, message, ClientState(), data.train[0], client_id=0, num_classes=3,
        generator=torch.Generator(), device=torch.device("cpu"),
    )
    torch.testing.assert_close(ctx.prior, torch.tensor(total / total.sum(), dtype=torch.float32))
    local = run(FedAvg(loss="bsm"), rounds=1, data=data)
    assert not local.algorithm.message_for(local.state_, 0).side


def test_focal_alpha_is_passed_to_the_loss():
    assert FedAvg(loss="focal", focal_alpha=0.25)._loss_fn.options["alpha"] == 0.25
    with pytest.raises(ValueError, match="FedAvg: 'focal_alpha'"):
        FedAvg(focal_alpha=1.5)


def test_bn_int_buffers_average_cast_shares_the_counters():
    sim = run(FedAvg(lr=0.1, bn_int_buffers="average_cast"), rounds=1)
    message = sim.algorithm.message_for(sim.state_, 0)
    counters = [k for k in message.arrays if k.endswith("num_batches_tracked")]
    assert counters and all(message.arrays[k].dtype == torch.long for k in counters)
    # 24 examples, batch 32: one step per client, so the average is 1
    assert all(int(message.arrays[k]) == 1 for k in counters)
    skip = run(FedAvg(), rounds=1)
    sent = skip.algorithm.message_for(skip.state_, 0).arrays
    assert not [k for k in sent if k.endswith("num_batches_tracked")]


def test_uniform_client_weighting_averages_with_equal_weights():
    replies = [ClientReply(0, {"w": torch.tensor([1.0])}, 1),
               ClientReply(1, {"w": torch.tensor([4.0])}, 3)]
    state = GlobalState(weights={"w": torch.tensor([0.0])})
    assert float(FedAvg().aggregate(state, replies).weights["w"]) == pytest.approx(3.25)
    uniform = FedAvg(client_weighting="uniform").aggregate(state, replies)
    assert float(uniform.weights["w"]) == pytest.approx(2.5)


def test_weighted_client_sampling_prefers_large_clients():
    sizes = [4, 4, 4, 4, 200]
    train = {k: ArrayDataset(torch.rand(n, 3, 8, 8), torch.arange(n) % 3)
             for k, n in enumerate(sizes)}
    test = {k: ArrayDataset(torch.rand(3, 3, 8, 8), torch.arange(3)) for k in range(5)}
    data = FederatedDataset("sizes", train, test, class_names=("a", "b", "c"))
    sim = Simulation(FedAvg(), tiny_cnn, data, num_rounds=1, fraction=0.2,
                     client_sampling="weighted", progress=False)
    picks = [sim.sample_clients(r)[0] for r in range(40)]
    assert picks.count(4) > 30
    assert picks == [sim.sample_clients(r)[0] for r in range(40)]


def test_aggregate_first_starts_from_the_average_of_client_initialisations():
    from fedlib.core.algorithm import build_model
    from fedlib.core.simulation import derive_seed

    sim = Simulation(FedAvg(), tiny_cnn, blobs(), num_rounds=1, progress=False,
                     round_order="aggregate_first", seed=4)
    inits = [build_model(tiny_cnn, derive_seed(4, k)).state_dict() for k in range(3)]
    key = "head.weight"
    expected = sum(i[key] for i in inits) / 3  # equal client sizes
    torch.testing.assert_close(sim.state_.weights[key], expected)


# ------------------------------------------------------------------ evaluation path
def test_history_uses_the_evaluate_metric_names_and_models_can_be_kept():
    sim = run(FedAvg(lr=0.1), rounds=1, evaluate_clients=True)
    model = sim.global_model()
    scores = evaluate(model, sim.dataset.pooled_test(), num_classes=3, metrics="basic")
    last = sim.history_.rounds.iloc[-1]
    for name, value in scores.items():
        assert last[f"gen_{name}"] == pytest.approx(value)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    sim.client_model(0)  # loads other weights into the simulator's scratch model
    assert same(kept, dict(model.state_dict()))


def test_a_shared_test_set_is_scored_once_and_specialization_says_so():
    shared = ArrayDataset(torch.rand(9, 3, 8, 8), torch.arange(9) % 3)
    toy = blobs()
    data = FederatedDataset("shared", dict(toy.train), {k: shared for k in range(3)},
                            class_names=("a", "b", "c"))
    sim = run(FedAvg(lr=0.1), rounds=1, data=data)
    assert "gen_client_mean_balanced_accuracy" not in sim.history_.rounds
    assert "gen_accuracy" not in sim.history_.clients
    summary = evaluate_run(sim)
    assert summary["spec_test"] == "shared"
    assert summary["gen_accuracy"] == pytest.approx(
        evaluate(sim.global_model(), shared, num_classes=3)["accuracy"])


def test_empty_clients_are_named_and_never_train():
    toy = blobs()
    train = dict(toy.train)
    train[1] = train[1].subset([])
    data = FederatedDataset("gaps", train, dict(toy.test), class_names=("a", "b", "c"))
    with pytest.warns(UserWarning, match=r"clients \[1\] .* have no training data"):
        sim = run(FedAvg(), rounds=1, data=data)
    assert sim.history_.rounds["num_clients"].iloc[0] == 2
    empty = {k: toy.train[k].subset([]) for k in range(3)}
    with pytest.raises(ValueError, match="every client of 'gaps' has an empty training split"):
        Simulation(FedAvg(), tiny_cnn, FederatedDataset("gaps", empty, dict(toy.test),
                   class_names=("a", "b", "c")), num_rounds=1)


# ------------------------------------------------------------------ resume checks
def test_resume_refuses_other_data_settings_and_model(tmp_path):
    run(FedAvg(), rounds=1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="dataset_fingerprint"):
        Simulation(FedAvg(), tiny_cnn, blobs(seed=1), num_rounds=2, progress=False,
                   checkpoint_dir=tmp_path).run(resume=True)
    with pytest.raises(ValueError, match="eval_every: checkpoint 1, this run 2"):
        Simulation(FedAvg(), tiny_cnn, blobs(), num_rounds=2, progress=False, eval_every=2,
                   checkpoint_dir=tmp_path).run(resume=True)
    with pytest.raises(ValueError, match="method_params.lr: checkpoint 0.05, this run 0.1"):
        Simulation(FedAvg(lr=0.1), tiny_cnn, blobs(), num_rounds=2, progress=False,
                   checkpoint_dir=tmp_path).run(resume=True)
    from fedlib.models import SmallCNN

    with pytest.raises(ValueError, match="model does not match"):
        Simulation(FedAvg(), lambda: SmallCNN(3, 3, width=4), blobs(), num_rounds=2,
                   progress=False, checkpoint_dir=tmp_path).run(resume=True)


# ------------------------------------------------------------------ FedBN
def test_fedbn_keeps_every_normalization_entry_local():
    sim = run(FedBN(lr=0.1), rounds=2)
    norms = norm_keys(sim.model_)
    assert norms and all(k.startswith(("body.1.", "body.5.", "body.9.")) for k in norms)
    message = sim.algorithm.message_for(sim.state_, 0)
    assert not set(message.arrays) & norms
    assert set(message.arrays) == {k for k, v in sim.model_.state_dict().items()
                                   if v.is_floating_point()} - norms
    a, b = sim.client_states_[0].personal, sim.client_states_[1].personal
    assert norms <= set(a)
    assert not torch.equal(a["body.1.running_mean"], b["body.1.running_mean"])
    own = sim.client_model(1).state_dict()
    assert torch.equal(own["body.1.weight"], b["body.1.weight"])
    assert torch.equal(own["body.0.weight"], sim.state_.weights["body.0.weight"])


def test_fedbn_refuses_a_model_without_normalization():
    from fedlib.models import SmallCNN

    with pytest.raises(ValueError, match="FedBN: the model has no normalization layers"):
        Simulation(FedBN(), lambda: SmallCNN(3, 3, width=2, norm="none"), blobs(),
                   num_rounds=1, progress=False)


# ------------------------------------------------------------------ SCAFFOLD
def test_scaffold_corrects_the_gradient_by_server_minus_client_control():
    """grad = g - c_i + c, for every parameter."""
    torch.manual_seed(0)
    model = tiny_cnn()
    method = SCAFFOLD()
    names = [n for n, _ in model.named_parameters()]
    c = {n: torch.full_like(p, 0.3) for n, p in model.named_parameters()}
    c_i = {n: torch.full_like(p, -0.2) for n, p in model.named_parameters()}
    message = RoundMessage(0, {n: p.detach() for n, p in model.named_parameters()},
                           side={"scaffold.c." + n: c[n] for n in names})
    data = blobs().train[0]
    ctx = LocalContext(0, 0, message, ClientState(method={"control": c_i}), data,
                       np.array([8, 8, 8]), torch.ones(3) / 3, {}, torch.device("cpu"),
                       torch.Generator(), 0.1)
    x, y = data.images[:6], data.labels[:6]
    model.zero_grad()
    method.local_loss(model, (x, y), ctx).backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    method.before_local_training(model, ctx)
    model.zero_grad()
    method.local_loss(model, (x, y), ctx).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n] + 0.5)
    method.after_local_training(model, ctx)  # removes the hooks
    model.zero_grad()
    method.local_loss(model, (x, y), ctx).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n])


def test_scaffold_control_variates_follow_option_two():
    """c_i+ = c_i - c + (x - y_i)/(K lr) with c = c_i = 0 in round 1; c <- c + sum dc_i / N."""
    sim = Simulation(SCAFFOLD(lr=0.1, batch_size=8), tiny_cnn, blobs(), num_rounds=1,
                     progress=False)
    x = {k: v.clone() for k, v in sim.state_.weights.items()}
    sim.run()
    steps = 3  # 24 examples, batch 8, one epoch
    for k in range(3):
        control = sim.client_states_[k].method["control"]
        assert set(control) == {n for n, _ in sim.model_.named_parameters()}
    replies = sim.local_updates()
    assert all(set(r.side) == {"scaffold.dc." + n for n, _ in sim.model_.named_parameters()}
               for r in replies)
    # c = 0 + (1/N) sum_i (c_i+ - 0) with all N = 3 clients in round 1
    mean_control = {n: sum(sim.client_states_[k].method["control"][n] for k in range(3)) / 3
                    for n in sim.state_.extra["scaffold_control"]}
    for n, value in sim.state_.extra["scaffold_control"].items():
        torch.testing.assert_close(value, mean_control[n])
    # client 0's control from its own first-round update, by hand
    fresh = Simulation(SCAFFOLD(lr=0.1, batch_size=8), tiny_cnn, blobs(), num_rounds=1,
                       progress=False)
    reply = fresh.local_updates([0])[0]
    name = "head.weight"
    expected = (x[name] - reply.arrays[name]) / (steps * 0.1)
    torch.testing.assert_close(reply.side["scaffold.dc." + name], expected)


# ------------------------------------------------------------------ server optimizers
def _server_round(method, x, mean):
    state = GlobalState(weights={"w": torch.tensor(x)}, extra={})
    return method.aggregate(state, [ClientReply(0, {"w": torch.tensor(mean)}, 1)])


def test_fedadam_server_step_by_hand():
    """x=(1,2), mean=(1.5,1): D=(0.5,-1); m=0.1 D=(0.05,-0.1); v=0.01 D^2=(0.0025,0.01);
    x' = x + 0.1 m / (sqrt(v) + 1e-3) = (1 + 0.1*0.05/0.051, 2 - 0.1*0.1/0.101)."""
    new = _server_round(FedAdam(server_lr=0.1), [1.0, 2.0], [1.5, 1.0])
    torch.testing.assert_close(new.weights["w"], torch.tensor([1 + 0.005 / 0.051,
                                                                2 - 0.01 / 0.101]))
    torch.testing.assert_close(new.extra["server_v"]["w"],
                               torch.tensor([0.0025, 0.01], dtype=torch.float64))


def test_fedyogi_second_moment_differs_from_adam_by_hand():
    """Round 2 with D2=(0.1,0.2) from v1=(0.0025,0.01): Adam v2 = 0.99 v1 + 0.01 D2^2 =
    (0.002575, 0.0103); Yogi v2 = v1 - 0.01 D2^2 sign(v1 - D2^2) = (0.0026, 0.0104)."""
    for cls, expected in ((FedAdam, [0.002575, 0.0103]), (FedYogi, [0.0026, 0.0104])):
        method = cls(server_lr=0.1)
        first = _server_round(method, [1.0, 2.0], [1.5, 1.0])
        x = first.weights["w"]
        step = torch.tensor([0.1, 0.2])
        second = method.aggregate(first, [ClientReply(0, {"w": x + step}, 1)])
        torch.testing.assert_close(second.extra["server_v"]["w"],
                                   torch.tensor(expected, dtype=torch.float64),
                                   atol=1e-8, rtol=0)


def test_fedavgm_server_momentum_by_hand_and_fedavg_limit():
    """v1 = (0.5,-1), x1 = (1.5,1); round 2 mean (2,1): v2 = 0.9 v1 + (0.5,0) = (0.95,-0.9),
    x2 = x1 + v2 = (2.45, 0.1)."""
    method = FedAvgM(server_lr=1.0, server_momentum=0.9)
    first = _server_round(method, [1.0, 2.0], [1.5, 1.0])
    torch.testing.assert_close(first.weights["w"], torch.tensor([1.5, 1.0]))
    second = method.aggregate(first, [ClientReply(0, {"w": torch.tensor([2.0, 1.0])}, 1)])
    torch.testing.assert_close(second.weights["w"], torch.tensor([2.45, 0.1]))
    plain = run(FedAvg(lr=0.1), rounds=2)
    limit = run(FedAvgM(lr=0.1, server_momentum=0.0, server_lr=1.0), rounds=2)
    for k, v in plain.state_.weights.items():
        torch.testing.assert_close(limit.state_.weights[k], v)


# ------------------------------------------------------------------ FedAvg + fine-tuning
def test_fedavg_ft_fine_tunes_for_evaluation_only():
    ft = run(FedAvgFT(lr=0.1, ft_epochs=2), rounds=2)
    plain = run(FedAvg(lr=0.1), rounds=2)
    assert same(ft.state_.weights, plain.state_.weights)
    tuned = ft.client_model(0).state_dict()
    assert not torch.equal(tuned["head.weight"], ft.state_.weights["head.weight"])
    assert ft.client_states_[0].post_local is None and not ft.client_states_[0].method
    none = run(FedAvgFT(lr=0.1, ft_epochs=0), rounds=1)
    assert torch.equal(none.client_model(0).state_dict()["head.weight"],
                       none.state_.weights["head.weight"])
    head = run(FedAvgFT(lr=0.1, ft_epochs=2, ft_part="head"), rounds=1)
    tuned = head.client_model(0).state_dict()
    assert torch.equal(tuned["body.0.weight"], head.state_.weights["body.0.weight"])
    assert not torch.equal(tuned["head.weight"], head.state_.weights["head.weight"])


@pytest.mark.parametrize("name", ["fedbn", "scaffold", "fedavgm", "fedadam", "fedyogi",
                                  "fedavg_ft"])
def test_new_baselines_resume_bit_exactly(tmp_path, name):
    method = get_method(name, lr=0.1)
    whole = run(method, rounds=3)
    run(method, rounds=2, checkpoint_dir=tmp_path)
    resumed = Simulation(method, tiny_cnn, blobs(), num_rounds=3, progress=False,
                         checkpoint_dir=tmp_path)
    resumed.run(resume=True)
    assert same(whole.state_.weights, resumed.state_.weights)
