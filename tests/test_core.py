"""The algorithm protocol and the simulator: aggregation, FedProx, determinism, resume,
client failures, personalized state and what crosses the wire."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from toy_federation import blobs, tiny_cnn

from fedlib.core import (
    Algorithm,
    ClientError,
    ClientReply,
    GlobalState,
    Simulation,
    weighted_average,
)
from fedlib.data import ArrayDataset, FederatedDataset
from fedlib.methods import FedAvg, FedPer, FedProx, LocalOnly, get_method
from fedlib.methods.fedprox import proximal_term


def run(method: Algorithm, rounds: int = 3, **kwargs) -> Simulation:
    sim = Simulation(method, tiny_cnn, blobs(), num_rounds=rounds, progress=False, **kwargs)
    sim.run()
    return sim


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def history_without_times(sim: Simulation):
    return sim.history_.rounds.drop(columns="seconds"), sim.history_.clients


# ------------------------------------------------------------------ aggregation
def test_weighted_average_matches_hand_computed_mean():
    # client 0: n=1, w=(1, 2); client 1: n=3, w=(4, 8) -> (1*1 + 3*4)/4, (1*2 + 3*8)/4
    out = weighted_average(
        [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([4.0, 8.0])}], [1, 3]
    )
    assert torch.equal(out["w"], torch.tensor([3.25, 6.5]))


def test_fedavg_aggregate_weights_by_examples_and_keeps_unsent_keys():
    state = GlobalState(
        weights={"w": torch.zeros(2), "personal": torch.tensor([7.0])},
        extra={"shared_keys": ["w"]},
    )
    replies = [
        ClientReply(0, {"w": torch.tensor([2.0, 0.0])}, num_examples=30),
        ClientReply(1, {"w": torch.tensor([0.0, 4.0])}, num_examples=10),
    ]
    new = FedAvg().aggregate(state, replies)
    assert torch.equal(new.weights["w"], torch.tensor([1.5, 1.0]))
    assert torch.equal(new.weights["personal"], torch.tensor([7.0]))
    assert new.round == 1


def test_weighted_average_rejects_bad_weights():
    with pytest.raises(ValueError, match="'weights'"):
        weighted_average([{"w": torch.ones(1)}], [0])
    with pytest.raises(ValueError, match="at least one"):
        weighted_average([], [])


# ------------------------------------------------------------------ FedProx
def test_proximal_gradient_is_mu_times_distance():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
    anchor = {"weight": torch.tensor([[0.5, 1.0]])}
    mu = 0.3
    (0.5 * mu * proximal_term(model, anchor)).backward()
    # d/dw (mu/2)||w - w_t||^2 = mu (w - w_t) = 0.3 * (0.5, -3)
    assert torch.allclose(model.weight.grad, torch.tensor([[0.15, -0.9]]))


def test_fedprox_with_mu_zero_is_fedavg_bit_for_bit():
    a, b = run(FedAvg(lr=0.1)), run(FedProx(lr=0.1, mu=0.0))
    assert same_weights(a.state_.weights, b.state_.weights)
    assert history_without_times(a)[0].equals(history_without_times(b)[0])


def test_fedprox_with_large_mu_stays_closer_to_the_start():
    start = Simulation(FedAvg(), tiny_cnn, blobs(), num_rounds=1, progress=False).state_.weights
    start = {k: v.clone() for k, v in start.items()}

    def drift(sim):
        return sum(
            (sim.state_.weights[k] - start[k]).pow(2).sum().item() for k in start if "weight" in k
        )

    # several steps per round: at a round's first step w = w^t and the pull is zero
    steps = dict(lr=0.1, batch_size=8, local_steps=6)
    assert drift(run(FedProx(mu=10.0, **steps), rounds=2)) < drift(run(FedAvg(**steps), rounds=2))


# ------------------------------------------------------------------ determinism and resume
def test_same_seed_same_history_other_seed_differs():
    a, b = run(FedAvg(), seed=3), run(FedAvg(), seed=3)
    c = run(FedAvg(), seed=4)
    assert history_without_times(a)[0].equals(history_without_times(b)[0])
    assert history_without_times(a)[1].equals(history_without_times(b)[1])
    assert same_weights(a.state_.weights, b.state_.weights)
    assert not same_weights(a.state_.weights, c.state_.weights)


@pytest.mark.parametrize("optimizer_state", ["reset", "persist"])
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, optimizer_state):
    method = FedPer(lr=0.1, optimizer_state=optimizer_state)
    settings = dict(fraction=0.67, seed=1, progress=False)
    whole = Simulation(method, tiny_cnn, blobs(), num_rounds=4, **settings)
    whole.run()

    first = Simulation(method, tiny_cnn, blobs(), num_rounds=2, checkpoint_dir=tmp_path, **settings)
    first.run()
    resumed = Simulation(
        method, tiny_cnn, blobs(), num_rounds=4, checkpoint_dir=tmp_path, **settings
    )
    resumed.run(resume=True)

    assert same_weights(whole.state_.weights, resumed.state_.weights)
    for k in whole.client_states_:
        assert same_weights(
            whole.client_states_[k].personal, resumed.client_states_[k].personal
        )
    h_whole, h_resumed = history_without_times(whole), history_without_times(resumed)
    assert h_whole[0].equals(h_resumed[0])
    assert h_whole[1].equals(h_resumed[1])


class KilledInRound(Simulation):
    """A run killed while it plays round ``killed_in`` (1-based), before that round ends."""

    killed_in = 4

    def _play_round(self, round_: int):
        if round_ + 1 == self.killed_in:
            raise KeyboardInterrupt
        return super()._play_round(round_)


def all_tensors_equal(a, b) -> bool:
    """Nested containers of tensors and plain values, equal bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(all_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(all_tensors_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


FAST = {"creff": {"retrain_epochs": 2, "match_steps": 2}, "fedbabu": {"ft_epochs": 1}}


@pytest.mark.parametrize("name", ["fedavg", "ditto", "fedper", "scaffold", "creff", "fednpr",
                                  "fedbabu", "fca"])
def test_resume_from_a_checkpoint_every_two_rounds_equals_the_uninterrupted_run(tmp_path, name):
    """5 rounds, a checkpoint every 2: killed in round 4, the run resumes from round 2 and ends
    as the uninterrupted run (weights, server extras, client states, history)."""
    settings = dict(num_rounds=5, fraction=0.67, seed=2, progress=False)
    method = get_method(name, lr=0.1, **FAST.get(name, {}))
    whole = Simulation(method, tiny_cnn, blobs(), **settings)
    whole.run()

    killed = KilledInRound(method, tiny_cnn, blobs(), checkpoint_dir=tmp_path, checkpoint_every=2,
                           **settings)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert killed.state_.round == 3  # it had played 3 rounds, the checkpoint holds 2
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["round"] == 2
    resumed = Simulation(method, tiny_cnn, blobs(), checkpoint_dir=tmp_path, checkpoint_every=2,
                         **settings)
    resumed.run(resume=True)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["round"] == 5

    assert same_weights(whole.state_.weights, resumed.state_.weights)
    assert all_tensors_equal(whole.state_.extra, resumed.state_.extra)
    for k in whole.client_states_:
        assert all_tensors_equal(whole.client_states_[k].to_payload(),
                                 resumed.client_states_[k].to_payload())
    h_whole, h_resumed = history_without_times(whole), history_without_times(resumed)
    assert h_whole[0].equals(h_resumed[0])
    assert h_whole[1].equals(h_resumed[1])
    assert same_weights(dict(whole.client_model(0).state_dict()),
                        dict(resumed.client_model(0).state_dict()))


class CheckpointRounds(Simulation):
    """Records after which rounds a checkpoint is written."""

    def _checkpoint_payload(self):
        self.written = [*getattr(self, "written", []), self.state_.round]
        return super()._checkpoint_payload()


@pytest.mark.parametrize(("every", "written"), [
    (None, [1, 2, 3, 4, 5]), (1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (3, [3, 5]), (5, [5]),
    (7, [5]), (0, []),
])
def test_checkpoints_are_written_every_n_rounds_and_after_the_last(tmp_path, every, written):
    sim = CheckpointRounds(FedAvg(), tiny_cnn, blobs(), num_rounds=5, progress=False,
                           checkpoint_dir=tmp_path, checkpoint_every=every)
    sim.run()
    assert getattr(sim, "written", []) == written
    assert (tmp_path / "checkpoint.pt").exists() == bool(written)


@pytest.mark.parametrize("every", [-1, 1.5, True, "2"])
def test_checkpoint_every_refuses_what_is_not_an_int_at_least_zero(tmp_path, every):
    with pytest.raises((TypeError, ValueError), match=r"'checkpoint_every' must be None or an "
                       r"int >= 0, got"):
        Simulation(FedAvg(), tiny_cnn, blobs(), num_rounds=2, checkpoint_dir=tmp_path,
                   checkpoint_every=every)


def test_checkpoint_every_needs_a_folder_to_write_to():
    with pytest.raises(ValueError, match="'checkpoint_every'=2 needs a 'checkpoint_dir'"):
        Simulation(FedAvg(), tiny_cnn, blobs(), num_rounds=2, checkpoint_every=2)
    sim = Simulation(FedAvg(), tiny_cnn, blobs(), num_rounds=2, checkpoint_every=0)
    assert sim.checkpoint_every == 0


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    Simulation(
        FedAvg(), tiny_cnn, blobs(), num_rounds=1, progress=False, checkpoint_dir=tmp_path
    ).run()
    other = Simulation(
        FedProx(mu=0.5), tiny_cnn, blobs(), num_rounds=2, progress=False, checkpoint_dir=tmp_path
    )
    with pytest.raises(ValueError, match="other settings"):
        other.run(resume=True)


def test_checkpoint_loads_weights_only(tmp_path):
    import pickle

    (tmp_path / "checkpoint.pt").write_bytes(pickle.dumps(print))  # not tensors: refused
    sim = Simulation(
        FedAvg(), tiny_cnn, blobs(), num_rounds=1, progress=False, checkpoint_dir=tmp_path
    )
    with pytest.raises(ValueError, match="weights-only"):
        sim.run(resume=True)


# ------------------------------------------------------------------ client failures
class FailingDataset(ArrayDataset):
    """A client's data that breaks on access (an unreadable disk, say)."""

    def __getitem__(self, index):
        raise OSError("disk unreadable")


def with_failing_client(client: int = 1) -> FederatedDataset:
    data = blobs()
    bad = data.train[client]
    data.train[client] = FailingDataset(bad.images, bad.labels)
    data.train[client].images = None  # forces the generic loader, which calls __getitem__
    return data


def test_a_failing_client_stops_the_run_naming_client_and_round():
    sim = Simulation(FedAvg(), tiny_cnn, with_failing_client(1), num_rounds=2, progress=False)
    with pytest.raises(ClientError, match="client 1 failed in round 1: disk unreadable"):
        sim.run()


def test_a_failing_client_can_be_skipped_with_a_warning():
    sim = Simulation(
        FedAvg(),
        tiny_cnn,
        with_failing_client(1),
        num_rounds=2,
        progress=False,
        on_client_error="skip",
    )
    with pytest.warns(UserWarning, match="client 1 failed in round"):
        sim.run()
    rounds = sim.history_.rounds
    assert list(rounds["failed_clients"]) == [1, 1]
    assert list(rounds["num_clients"]) == [2, 2]
    assert all(
        torch.isfinite(v).all() for v in sim.state_.weights.values() if v.is_floating_point()
    )


class NaNLoss(FedAvg):
    def local_loss(self, model, batch, ctx):
        loss = super().local_loss(model, batch, ctx)
        return loss * float("nan") if ctx.client_id == 2 else loss


def test_non_finite_update_never_reaches_the_global_model():
    with pytest.raises(ClientError, match="client 2 failed in round 1: .*not finite|non-finite"):
        run(NaNLoss(), rounds=1)
    sim = Simulation(
        NaNLoss(), tiny_cnn, blobs(), num_rounds=1, progress=False, on_client_error="skip"
    )
    with pytest.warns(UserWarning, match="client 2"):
        sim.run()
    assert all(
        torch.isfinite(v).all() for v in sim.state_.weights.values() if v.is_floating_point()
    )


# ------------------------------------------------------------------ personal state and wire
def test_fedper_keeps_heads_local_and_sends_only_the_body():
    sim = Simulation(FedPer(lr=0.1), tiny_cnn, blobs(), num_rounds=2, progress=False)
    msg = sim.algorithm.message_for(sim.state_, 0)
    expected = {
        k
        for k, v in sim.model_.state_dict().items()
        if v.is_floating_point() and not k.startswith("head.")
    }
    assert expected and set(msg.arrays) == expected
    sim.run()
    heads = [sim.client_states_[k].personal["head.weight"] for k in range(3)]
    assert not torch.equal(heads[0], heads[1])
    # the server's head never moves: nobody sends one
    assert torch.equal(sim.state_.weights["head.weight"], sim.initial_weights_["head.weight"])
    assert "spec_balanced_accuracy" in sim.history_.clients
    assert "spec_balanced_accuracy" in sim.history_.rounds


def test_personal_head_persists_across_rounds():
    sim = Simulation(FedPer(lr=0.1), tiny_cnn, blobs(), num_rounds=1, progress=False)
    sim.run()
    after_one = sim.client_states_[0].personal["head.weight"].clone()
    # round 2 must start from the head trained in round 1, not from the initial head
    sim.algorithm.load_client_model(
        sim.model_,
        sim.algorithm.message_for(sim.state_, 0),
        sim.client_states_[0],
        sim.initial_weights_,
    )
    assert torch.equal(sim.model_.state_dict()["head.weight"], after_one)
    assert not torch.equal(after_one, sim.initial_weights_["head.weight"])


def test_local_only_sends_nothing_and_fedavg_sends_all_float_tensors():
    local = Simulation(LocalOnly(), tiny_cnn, blobs(), num_rounds=1, progress=False)
    assert dict(local.algorithm.message_for(local.state_, 0).arrays) == {}
    fedavg = Simulation(FedAvg(), tiny_cnn, blobs(), num_rounds=1, progress=False)
    sent = set(fedavg.algorithm.message_for(fedavg.state_, 0).arrays)
    assert sent == {k for k in fedavg.model_.state_dict() if "num_batches_tracked" not in k}


def test_persisted_optimizer_state_is_kept_per_client():
    sim = run(FedAvg(optimizer="adam", lr=1e-3, optimizer_state="persist"), rounds=2)
    steps = sim.client_states_[0].optimizer["state"][0]["step"]
    assert float(steps) == 2  # 24 examples, batch 32: one step per round, two rounds
    assert run(FedAvg(), rounds=1).client_states_[0].optimizer is None


def test_local_steps_overrides_epochs():
    method = FedAvg(
        optimizer="adam", lr=1e-3, optimizer_state="persist", local_steps=5, batch_size=8
    )
    sim = run(method, rounds=1)
    assert float(sim.client_states_[0].optimizer["state"][0]["step"]) == 5


def test_learning_rate_schedule_is_sent_per_round():
    method = FedAvg(lr=0.1, lr_milestones=(2, 3), lr_gamma=0.5)
    lrs = [method.round_config(GlobalState(weights={}, round=r))["lr"] for r in range(4)]
    assert lrs == [0.1, 0.1, 0.05, 0.025]


def test_client_sampling_is_seeded_and_sized():
    sim = Simulation(
        FedAvg(),
        tiny_cnn,
        blobs(num_clients=10),
        num_rounds=1,
        fraction=0.3,
        seed=5,
        progress=False,
    )
    picks = [sim.sample_clients(r) for r in range(3)]
    assert all(len(p) == 3 and p == sorted(p) for p in picks)
    assert picks == [sim.sample_clients(r) for r in range(3)]
    assert len({tuple(p) for p in picks}) > 1


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_rounds": 0}, "Simulation: 'num_rounds' must be an int >= 1, got 0"),
        ({"num_rounds": -3}, "'num_rounds'"),
        ({"num_rounds": 2, "fraction": 0.0}, "'fraction'"),
        ({"num_rounds": 2, "on_client_error": "ignore"}, "'on_client_error' must be one of"),
        ({"num_rounds": 2, "seed": -1}, "'seed'"),
    ],
)
def test_simulation_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Simulation(FedAvg(), tiny_cnn, blobs(), progress=False, **kwargs)


def test_unknown_method_and_option_are_named():
    with pytest.raises(ValueError, match="unknown method 'fedfoo'; valid methods are .*fedavg"):
        get_method("fedfoo")
    with pytest.raises(TypeError, match=r"FedProx: unknown option\(s\) \['alpha'\]"):
        get_method("fedprox", alpha=1.0)
    with pytest.raises(ValueError, match="FedProx: 'mu' must be a float >= 0, got -0.5."):
        FedProx(mu=-0.5)
    with pytest.raises(ValueError, match="FedAvg: 'optimizer' must be one of 'sgd', 'adam'"):
        FedAvg(optimizer="rmsprop")


def test_history_reports_pooled_and_per_site_metrics():
    sim = run(FedAvg(lr=0.1), rounds=2)
    rounds, clients = sim.history_.rounds, sim.history_.clients
    assert list(rounds["round"]) == [1, 2]
    expected = {"gen_accuracy", "gen_balanced_accuracy", "train_loss",
                "gen_client_mean_balanced_accuracy"}
    assert expected <= set(rounds.columns)
    assert set(clients["client"]) == {0, 1, 2}
    # pooled accuracy is the example-weighted mean of the per-site accuracies
    last = clients[clients["round"] == 2]
    sizes = np.array([len(sim.dataset.test[k]) for k in range(3)])
    expected = float((last["gen_accuracy"].to_numpy() * sizes).sum() / sizes.sum())
    assert rounds["gen_accuracy"].iloc[-1] == pytest.approx(expected)


def test_local_updates_preview_the_next_round_without_changing_state():
    sim = Simulation(FedAvg(lr=0.1), tiny_cnn, blobs(), num_rounds=2, progress=False)
    sim.run()
    before = {k: v.clone() for k, v in sim.state_.weights.items()}
    replies = sim.local_updates()
    assert same_weights(before, sim.state_.weights)
    expected = sim.algorithm.aggregate(sim.state_, replies).weights

    longer = Simulation(FedAvg(lr=0.1), tiny_cnn, blobs(), num_rounds=3, progress=False)
    longer.run()
    assert same_weights(expected, longer.state_.weights)
    more_epochs = sim.local_updates(algorithm=FedAvg(lr=0.1, local_epochs=3))
    assert not torch.equal(more_epochs[0].arrays["head.weight"], replies[0].arrays["head.weight"])
