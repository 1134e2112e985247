"""FedNPR, FedNPR-Per and the NPR plug-in on the protocol (fednpr.md, "Unit tests that pin the
maths" 9-10 and the wire test): what crosses the wire, where the sub-centroids live, and that
the plug-in with lambda = 0 leaves every method's results bit for bit unchanged."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn
from toy_federation import blobs, one_round, tiny_cnn

from fedlib.core import ClientError, ClientState, LocalContext, RoundMessage, Simulation
from fedlib.methods import (
    METHODS,
    NPR,
    Ditto,
    FedAvg,
    FedNPR,
    FedNPRPer,
    FedProx,
    get_method,
    with_npr,
)
from fedlib.methods.npr import BANK, SUB_CENTROIDS, npr_loss, refresh_sub_centroids

FAST = {"creff": {"retrain_epochs": 5, "match_steps": 5}, "fedbabu": {"ft_epochs": 1},
        "fedavg_ft": {"ft_epochs": 1}}
FLOAT = {k for k, v in tiny_cnn().state_dict().items() if v.is_floating_point()}
BODY = {k for k in FLOAT if k.startswith("body.")}
HEAD = {"head.weight", "head.bias"}
FEATURE_DIM = tiny_cnn().feature_dim
# the plug-in applies to every classification method; FedNPR's own classes already have it
PLUGGABLE = sorted(name for name, cls in METHODS.items() if not issubclass(cls, NPR))


def simulate(method, rounds: int = 2, data=None, **kwargs) -> Simulation:
    sim = Simulation(method, tiny_cnn, data or blobs(absent={0: 2}), num_rounds=rounds,
                     progress=False, **kwargs)
    sim.run()
    return sim


def assert_nothing_of_npr_sent(reply, bank: torch.Tensor, num_train: int) -> None:
    """No tensor of the reply holds a sub-centroid or a per-image feature."""
    rows = torch.nn.functional.normalize(bank.reshape(-1, bank.shape[-1]), dim=1)
    for channel in (reply.arrays, reply.side):
        for key, value in channel.items():
            assert num_train not in value.shape, f"{key} has one entry per training image"
            if value.is_floating_point() and value.ndim and value.shape[-1] == bank.shape[-1]:
                sent = torch.nn.functional.normalize(value.reshape(-1, value.shape[-1]), dim=1)
                assert (sent @ rows.T).max() < 1 - 1e-4, f"{key} carries a sub-centroid"


def same_run(a: Simulation, b: Simulation) -> None:
    """Global weights, every client's stored model tensors and the history are identical."""
    assert a.state_.weights.keys() == b.state_.weights.keys()
    for key, value in a.state_.weights.items():
        assert torch.equal(value, b.state_.weights[key]), key
    for k in a.client_states_:
        sa, sb = a.client_states_[k], b.client_states_[k]
        for part in ("personal", "post_local"):
            pa, pb = getattr(sa, part) or {}, getattr(sb, part) or {}
            assert pa.keys() == pb.keys() and all(torch.equal(pa[n], pb[n]) for n in pa), part
        assert set(sa.method) - {SUB_CENTROIDS} == set(sb.method) - {SUB_CENTROIDS}
    assert a.history_.rounds.drop(columns="seconds").equals(
        b.history_.rounds.drop(columns="seconds"))


# ------------------------------------------------------------------ the wire
def test_fednpr_shares_every_weight_and_keeps_its_sub_centroids():
    sim = simulate(FedNPR(), rounds=1)
    message, reply, state = one_round(sim)
    assert set(message.arrays) == FLOAT and dict(message.side) == {}
    assert set(reply.arrays) == FLOAT and dict(reply.side) == {}
    assert set(state.method) == {SUB_CENTROIDS}
    bank = state.method[SUB_CENTROIDS]
    assert bank.shape == (3, 4, FEATURE_DIM) and bank.device.type == "cpu"
    assert_nothing_of_npr_sent(reply, bank, len(sim.dataset.train[0]))


@pytest.mark.parametrize(("head", "side"), [("none", set()), ("avg_local", {
    "local_head.head.weight", "local_head.head.bias"})])
def test_fednpr_per_sends_the_body_only(head, side):
    sim = simulate(FedNPRPer(pfl_global_head=head), rounds=1)
    message, reply, state = one_round(sim)
    assert set(message.arrays) == BODY and set(reply.arrays) == BODY
    assert set(reply.side) == side  # "avg_local": the head, for the evaluation head only
    assert set(state.method) == {SUB_CENTROIDS} and HEAD <= set(state.personal)
    assert_nothing_of_npr_sent(reply, state.method[SUB_CENTROIDS], len(sim.dataset.train[0]))


@pytest.mark.parametrize("name", PLUGGABLE)
def test_the_plug_in_adds_nothing_to_the_wire(name):
    plain = simulate(get_method(name, **FAST.get(name, {})), rounds=1)
    npr = simulate(get_method(name, npr=True, **FAST.get(name, {})), rounds=1)
    (m0, r0, s0), (m1, r1, s1) = one_round(plain), one_round(npr)
    assert set(m1.arrays) == set(m0.arrays) and set(m1.side) == set(m0.side)
    assert set(r1.arrays) == set(r0.arrays) and set(r1.side) == set(r0.side)
    assert set(s1.method) == set(s0.method) | {SUB_CENTROIDS}
    assert_nothing_of_npr_sent(r1, s1.method[SUB_CENTROIDS], len(npr.dataset.train[0]))


# ------------------------------------------------------------------ lambda = 0
@pytest.mark.parametrize("name", PLUGGABLE)
def test_the_plug_in_with_lambda_zero_leaves_results_bit_identical(name):
    options = FAST.get(name, {})
    same_run(simulate(get_method(name, **options)),
             simulate(get_method(name, npr=True, npr_lambda=0.0, **options)))


@pytest.mark.parametrize("assign", ["sinkhorn", "random"])
def test_fednpr_with_lambda_zero_is_fedavg_with_balanced_softmax(assign):
    """Spec test 9: the refresh draws from its own generator, so even the random assignment
    leaves the training stream untouched."""
    same_run(simulate(FedAvg(loss="bsm")), simulate(FedNPR(npr_lambda=0.0, npr_assign=assign)))


def test_fedavg_bsm_with_the_plug_in_is_fednpr():
    same_run(simulate(get_method("fedavg", loss="bsm", npr=True, npr_K=2)),
             simulate(FedNPR(npr_K=2)))


def test_fednpr_per_with_lambda_zero_is_fedper_with_balanced_softmax():
    same_run(simulate(get_method("fedper", loss="bsm", pfl_global_head="none")),
             simulate(FedNPRPer(npr_lambda=0.0)))


def test_a_positive_lambda_changes_the_run():
    plain, npr = simulate(FedAvg(loss="bsm")), simulate(FedNPR())
    for key in ("body.0.weight", "head.weight"):
        assert not torch.equal(plain.state_.weights[key], npr.state_.weights[key])


def test_second_feature_pass_updates_batchnorm_twice():
    """npr_feature_pass="second" runs the backbone again: with lambda = 0 the weights' path is
    unchanged but the BatchNorm running statistics move twice per batch."""
    shared, second = (simulate(FedNPR(npr_lambda=0.0, npr_feature_pass=p), rounds=1)
                      for p in ("shared", "second"))
    weights = shared.state_.weights["body.0.weight"], second.state_.weights["body.0.weight"]
    assert torch.equal(*weights)
    assert not torch.equal(shared.state_.weights["body.1.running_mean"],
                           second.state_.weights["body.1.running_mean"])


def test_code_refresh_pass_uses_batch_statistics_in_round_zero():
    clean, code = (simulate(FedNPR(npr_lambda=0.0, npr_refresh_pass=p), rounds=1)
                   for p in ("eval_clean", "code"))
    assert not torch.equal(clean.state_.weights["body.1.running_mean"],
                           code.state_.weights["body.1.running_mean"])


# ------------------------------------------------------------------ the refresh and the loss
def test_sub_centroids_are_recomputed_from_the_received_model_each_round():
    sim = simulate(FedNPR(), rounds=2)
    before = sim.client_states_[0].method[SUB_CENTROIDS]
    message, _, state = one_round(sim)
    model = tiny_cnn()
    model.load_state_dict({**sim.initial_weights_, **message.arrays})
    model.eval()
    data = sim.dataset.train[0]
    with torch.no_grad():
        features = model.features(data.images)
    expected = refresh_sub_centroids(before, features, data.labels)
    torch.testing.assert_close(state.method[SUB_CENTROIDS], expected, rtol=0, atol=1e-6)
    assert torch.equal(state.method[SUB_CENTROIDS][2], before[2])  # client 0 lacks class 2


def test_local_loss_adds_lambda_times_the_npr_loss_of_the_classifier_features():
    bank = torch.randn(3, 4, FEATURE_DIM, generator=torch.Generator().manual_seed(0))
    counts = torch.tensor([2.0, 3.0, 1.0])
    ctx = LocalContext(
        client_id=0, round=0, message=RoundMessage(0, {}), state=ClientState(), data=None,
        class_counts=counts.numpy(), prior=counts / counts.sum(), global_params={},
        device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), lr=0.1,
        extras={BANK: bank},
    )
    model = tiny_cnn().eval()
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 1])
    base = FedAvg(loss="bsm").local_loss(model, (x, y), ctx)
    term = npr_loss(model.features(x), y, bank)
    paper = FedNPR(npr_lambda=0.3).local_loss(model, (x, y), ctx)
    code = FedNPR(npr_lambda=0.3, npr_lambda_form="code").local_loss(model, (x, y), ctx)
    torch.testing.assert_close(paper, base + 0.3 * term, rtol=0, atol=1e-6)
    torch.testing.assert_close(code, base + term + 0.3, rtol=0, atol=1e-6)
    # no bank (fine-tuning for evaluation skips the refresh): the method's loss unchanged
    ctx.extras.clear()
    assert torch.equal(FedNPR().local_loss(model, (x, y), ctx), base)


def test_fednpr_per_keeps_each_clients_head_and_takes_the_servers_body():
    """Spec test 10: after the broadcast, a client's head is its own and its body the server's."""
    sim = simulate(FedNPRPer(), rounds=2)
    for k in range(3):
        message = sim.algorithm.message_for(sim.state_, k)
        state = sim.client_states_[k]
        model = tiny_cnn()
        sim.algorithm.load_client_model(model, message, state, sim.initial_weights_)
        loaded = model.state_dict()
        for key in HEAD:
            assert torch.equal(loaded[key], state.personal[key])
        for key in BODY:
            assert torch.equal(loaded[key], sim.state_.weights[key])
    heads = [sim.client_states_[k].personal["head.weight"] for k in range(3)]
    assert not torch.equal(heads[0], heads[1])


# ------------------------------------------------------------------ composition
def test_with_npr_composes_once_keeps_the_name_and_merges_client_state():
    composed = with_npr(Ditto)
    assert with_npr(Ditto) is composed and with_npr(FedNPR) is FedNPR
    assert composed.name == "ditto" and issubclass(composed, Ditto)
    assert set(composed.client_state_fields) == set(Ditto.client_state_fields) | {SUB_CENTROIDS}
    method = get_method("fedprox", npr=True, mu=0.1, npr_K=2)
    assert type(method) is with_npr(FedProx) and method.mu == 0.1 and method.npr_K == 2
    assert method.params()["npr"] is True
    clone = pickle.loads(pickle.dumps(method))
    assert type(clone) is type(method) and clone.params() == method.params()


def test_rebuilding_from_logged_params_gives_the_same_method():
    method = get_method("fedrs", npr=True, npr_lambda=1.0)
    params = method.params()
    assert get_method("fedrs", **params).params() == params


def test_npr_needs_a_model_with_features():
    def plain_model():
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))

    sim = Simulation(FedNPR(), plain_model, blobs(), num_rounds=1, progress=False)
    with pytest.raises(ClientError, match=r"NPR needs a classifier with features\(x\)"):
        sim.run()


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: FedNPR(npr_K=0), ValueError, r"FedNPR: 'npr_K' must be an int >= 1, got 0"),
        (lambda: FedNPR(npr_lambda=-0.5), ValueError, r"'npr_lambda' must be a float >= 0"),
        (lambda: FedNPR(npr_lambda_form="sum"), ValueError, r"'npr_lambda_form' must be one"),
        (lambda: FedNPR(npr_assign="kmeans"), ValueError, r"'npr_assign' must be one of"),
        (lambda: FedNPR(npr_sinkhorn_eps=0.0), ValueError, r"'npr_sinkhorn_eps' must be a"),
        (lambda: FedNPR(npr_sinkhorn_iters=0), ValueError, r"'npr_sinkhorn_iters' must be an"),
        (lambda: FedNPR(npr_momentum=1.0), ValueError, r"'npr_momentum' must be a float"),
        (lambda: FedNPR(npr_refresh_pass="train"), ValueError, r"'npr_refresh_pass' must be"),
        (lambda: FedNPR(npr_empty_group="drop"), ValueError, r"'npr_empty_group' must be"),
        (lambda: FedNPR(npr_feature_pass="both"), ValueError, r"'npr_feature_pass' must be"),
        (lambda: FedNPR(npr=False), ValueError, r"FedNPR: 'npr' must be one of True"),
        (lambda: FedNPRPer(pfl_global_head="mean"), ValueError, r"'pfl_global_head' must be"),
        (lambda: get_method("fedprox", npr="yes"), TypeError, r"'npr' must be a bool"),
        (lambda: get_method("fedprox", npr_lambda=1.0), TypeError,
         r"FedProx: unknown option\(s\) \['npr_lambda'\] \(the npr_\* options need npr=True\)"),
        (lambda: get_method("fedprox", npr=True, npr_k=2), TypeError,
         r"FedProxNPR: unknown option\(s\) \['npr_k'\]"),
        (lambda: with_npr(nn.Linear), TypeError, r"with_npr: 'method' must be an Algorithm"),
    ],
)
def test_invalid_options_are_named(build, error, match):
    with pytest.raises(error, match=match):
        build()
