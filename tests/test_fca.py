"""FCA: the two heads, what crosses the wire, the loss terms, and the four evaluation pairings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_federation import blobs, tiny_cnn

from fedlib.core import ClientState, LocalContext, RoundMessage, Simulation
from fedlib.evaluation import evaluate_run, head_grid
from fedlib.methods import FCA, FedAvg

HEAD = {"head.weight", "head.bias"}
PERSONAL = {"personal_head.weight", "personal_head.bias"}


def run(method, rounds=2, **kwargs) -> Simulation:
    sim = Simulation(method, tiny_cnn, blobs(), num_rounds=rounds, progress=False, **kwargs)
    sim.run()
    return sim


def context(counts=(4, 4, 4)) -> LocalContext:
    counts = np.asarray(counts)
    prior = torch.as_tensor(counts / counts.sum(), dtype=torch.float32)
    ctx = LocalContext(0, 0, RoundMessage(0, {}), ClientState(), None, counts, prior, {},
                       torch.device("cpu"), torch.Generator(), 0.1)
    ctx.extras["fca_fed_prior"] = prior
    return ctx


def test_personalized_head_never_leaves_the_client_nor_is_overwritten():
    sim = run(FCA(lr=0.1), rounds=2)
    message = sim.algorithm.message_for(sim.state_, 0)
    assert not set(message.arrays) & PERSONAL and HEAD <= set(message.arrays)
    assert not message.side
    reply = sim.local_updates([0])[0]
    assert not set(reply.arrays) & PERSONAL and not reply.side
    own = {k: sim.client_states_[0].personal[k] for k in PERSONAL}
    sim.algorithm.load_client_model(sim.model_, message, sim.client_states_[0],
                                    sim.initial_weights_)
    loaded = sim.model_.state_dict()
    for k in PERSONAL:
        assert torch.equal(loaded[k], own[k])
    for k in HEAD:
        assert torch.equal(loaded[k], sim.state_.weights[k])
    heads = [sim.client_states_[k].personal["personal_head.weight"] for k in range(3)]
    assert not torch.equal(heads[0], heads[1])


def test_consistency_gradient_reaches_federated_head_and_body_only():
    method = FCA(fca_lambda_fed=0.0, fca_lambda_per=0.0, fca_lambda_cons=1.0)
    model = method.prepare_model(tiny_cnn())
    x, y = blobs().train[0].images[:6], blobs().train[0].labels[:6]
    method.local_loss(model, (x, y), context()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[k] is None or not grads[k].any() for k in PERSONAL)
    assert grads["head.weight"].abs().sum() > 0
    assert grads["body.0.weight"].abs().sum() > 0


def test_loss_is_the_weighted_sum_of_its_three_terms():
    """lambda_1 BSM(z_fed) + lambda_2 BSM(z_per) + lambda_c KL(sg p_per || p_fed), by hand."""
    from fedlib.losses import balanced_softmax_loss, consistency_loss

    method = FCA(fca_lambda_fed=0.5, fca_lambda_per=2.0, fca_lambda_cons=0.7)
    model = method.prepare_model(tiny_cnn()).eval()
    x, y = blobs().train[0].images[:6], blobs().train[0].labels[:6]
    ctx = context((1, 2, 3))
    h = model.features(x)
    z_fed, z_per = model.classify(h), model.classify_personal(h)
    expected = (0.5 * balanced_softmax_loss(z_fed, y, ctx.prior)
                + 2.0 * balanced_softmax_loss(z_per, y, ctx.prior)
                + 0.7 * consistency_loss(z_fed, z_per))
    torch.testing.assert_close(method.local_loss(model, (x, y), ctx), expected)


def test_without_personal_terms_fca_trains_like_fedavg_bsm():
    fca = run(FCA(lr=0.1, fca_lambda_per=0.0, fca_lambda_cons=0.0), rounds=1)
    bsm = run(FedAvg(lr=0.1, loss="bsm"), rounds=1)
    for k, v in bsm.state_.weights.items():
        assert torch.equal(fca.state_.weights[k], v), k


def test_the_four_pairings_read_the_heads_they_claim():
    sim = run(FCA(lr=0.1), rounds=2)
    grid = head_grid(sim)
    assert len(grid) == 4 and grid["default"].sum() == 1
    default = grid[grid["default"]].iloc[0]
    assert (default["fca_global_head"], default["fca_local_head"]) == ("fed", "per")
    assert default["gen_balanced_accuracy"] == pytest.approx(
        evaluate_run(sim)["gen_balanced_accuracy"])
    # zeroing every personalized head changes only the pairings that read it
    for k in range(3):
        state = sim.client_states_[k]  # a copy: stored back below
        for name in PERSONAL:
            state.personal[name] = torch.zeros_like(state.personal[name])
        sim.client_states_[k] = state
    assert not any(sim.client_states_[k].personal[n].any() for k in range(3) for n in PERSONAL)
    zeroed = head_grid(sim)
    key = ["fca_global_head", "fca_local_head"]
    before, after = grid.set_index(key), zeroed.set_index(key)
    assert before.loc[("fed", "fed"), "spec_accuracy"] == after.loc[("fed", "fed"),
                                                                     "spec_accuracy"]
    assert before.loc[("fed", "fed"), "gen_accuracy"] == after.loc[("fed", "fed"),
                                                                   "gen_accuracy"]
    # all-zero personalized heads give every class the same score: bAUC exactly 0.5 (ties)
    # and class 0 predicted everywhere (balanced accuracy 1/3); the trained heads' bAUC was
    # not 0.5, so the zeroing reached the pairings that read them (on this toy the trained
    # heads' balanced accuracy is itself 1/3, which alone could not tell the two apart)
    for pairing in [("fed", "per"), ("per_avg", "per")]:
        assert abs(before.loc[pairing, "spec_bauc"] - 0.5) > 0.01
        assert after.loc[pairing, "spec_bauc"] == pytest.approx(0.5)
        assert after.loc[pairing, "spec_balanced_accuracy"] == pytest.approx(1 / 3)
    assert abs(before.loc[("per_avg", "fed"), "gen_bauc"] - 0.5) > 0.01
    assert after.loc[("per_avg", "fed"), "gen_bauc"] == pytest.approx(0.5)
    assert after.loc[("per_avg", "fed"), "gen_balanced_accuracy"] == pytest.approx(1 / 3)


def test_per_avg_head_needs_the_personalized_heads():
    with pytest.raises(ValueError, match="'fca_global_head'='per_avg' needs the personalized"):
        FCA(fca_global_head="per_avg")
    uploaded = run(FCA(lr=0.1, fca_global_head="per_avg", pfl_global_head="avg_local"),
                   rounds=1)
    model = uploaded.global_model().state_dict()
    assert torch.equal(model["head.weight"],
                       uploaded.state_.extra["avg_local_head"]["personal_head.weight"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kl_mode": "mean"}, "FCA: 'kl_mode' must be one of 'batchmean', 'code'"),
        ({"fca_lambda_cons": -1.0}, "FCA: 'fca_lambda_cons' must be a float >= 0"),
        ({"fca_local_head": "avg"}, "FCA: 'fca_local_head' must be one of 'per', 'fed'"),
    ],
)
def test_invalid_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FCA(**kwargs)
