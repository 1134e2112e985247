"""The long-tail and personalization baselines: what crosses the wire, what each client keeps,
and the maths each method adds to FedAvg (baselines.md, "Unit tests that pin the maths" 4-11),
plus the core hooks they use (prepare_model, eval_weights, finetune_for_eval, spec_model)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toy_federation import blobs, tiny_cnn

from fedlib.core import Algorithm, ClientState, LocalContext, RoundMessage, Simulation
from fedlib.losses import gradient_match_distance
from fedlib.methods import (
    METHODS,
    MOON,
    CReFF,
    Ditto,
    FedAvg,
    FedBABU,
    FedLC,
    FedRep,
    FedRoD,
    FedRS,
    LocalOnly,
    get_method,
)
from fedlib.models import ProjectionHeadModel, TwoHeadClassifier

FAST = {"creff": {"retrain_epochs": 5, "match_steps": 5}, "fedbabu": {"ft_epochs": 1}}


def simulate(method: Algorithm, rounds: int = 2, data=None, **kwargs) -> Simulation:
    sim = Simulation(method, tiny_cnn, data or blobs(), num_rounds=rounds, progress=False,
                     **kwargs)
    sim.run()
    return sim


def one_round(sim: Simulation, client: int = 0):
    """The message to ``client``, its reply and its new state (nothing is aggregated)."""
    message = sim.algorithm.message_for(sim.state_, client)
    reply, state = sim.algorithm.client_update(
        sim.model_, message, sim.client_states_[client], sim.dataset.train[client],
        client_id=client, num_classes=3, initial_weights=sim.initial_weights_,
        generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
    )
    return message, reply, state


def context(counts, *, state=None, anchor=None, message=None) -> LocalContext:
    counts = np.asarray(counts)
    return LocalContext(
        client_id=0, round=0, message=message or RoundMessage(0, {}),
        state=state or ClientState(), data=None, class_counts=counts,
        prior=torch.as_tensor(counts / counts.sum(), dtype=torch.float32),
        global_params=anchor or {}, device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0), lr=0.1,
    )


def populated(state: ClientState) -> set[str]:
    """The entries a client keeps: 'personal', 'post_local', 'optimizer' and method entries."""
    kept = {"personal"} | set(state.method)
    kept |= {name for name in ("post_local", "optimizer") if getattr(state, name) is not None}
    return kept


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def batch(n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])[:n]


FLOAT = {k for k, v in tiny_cnn().state_dict().items() if v.is_floating_point()}
BODY = {k for k in FLOAT if k.startswith("body.")}
HEAD = {"head.weight", "head.bias"}
TRACKED = {k for k in tiny_cnn().state_dict() if k.endswith("num_batches_tracked")}
PROJECTION = {f"projection.{i}.{n}" for i in (0, 2) for n in ("weight", "bias")}
PERSONAL_HEAD = {"personal_head.weight", "personal_head.bias"}
CLASSIFIER = {"creff.classifier.weight", "creff.classifier.bias"}
GRADS_01 = {f"creff.grad.{c}.{n}" for c in (0, 1) for n in ("weight", "bias")}

# method -> (arrays sent, side sent, arrays replied, side replied, client-state entries,
# personal tensors besides counters); client 0 lacks class 2, so CReFF sends no gradient for it.
UPLOADED_HEAD = {"local_head.head.weight", "local_head.head.bias"}
POST = {"personal", "post_local"}
NORM = {k for k in tiny_cnn().state_dict() if k.startswith(("body.1.", "body.5.", "body.9."))}
PARAMS = {n for n, _ in tiny_cnn().named_parameters()}
SERVER_C = {"scaffold.c." + n for n in PARAMS}
DELTA_C = {"scaffold.dc." + n for n in PARAMS}
WIRE = {
    "fedavg": (FLOAT, set(), FLOAT, set(), POST, set()),
    "fedprox": (FLOAT, set(), FLOAT, set(), POST, set()),
    "fedrs": (FLOAT - {"head.bias"}, set(), FLOAT - {"head.bias"}, set(), POST, set()),
    "fedlc": (FLOAT, set(), FLOAT, set(), POST, set()),
    "moon": (FLOAT | PROJECTION, set(), FLOAT | PROJECTION, set(), POST | {"previous_model"},
             set()),
    "creff": (FLOAT, CLASSIFIER, FLOAT, GRADS_01, POST, set()),
    # FedPer and FedRep also upload their heads for the evaluation-only averaged head
    "fedper": (BODY, set(), BODY, UPLOADED_HEAD, {"personal"}, HEAD),
    "fedrep": (BODY, set(), BODY, UPLOADED_HEAD, {"personal"}, HEAD),
    "fedbabu": (BODY, set(), BODY, set(), {"personal"}, HEAD),
    "fedrod": (FLOAT, set(), FLOAT, set(), {"personal"}, PERSONAL_HEAD),
    "ditto": (FLOAT, set(), FLOAT, set(), {"personal", "personal_model"}, set()),
    "local": (set(), set(), set(), set(), {"personal"}, FLOAT),
    # FedBN keeps every normalization entry local and uploads them for the evaluation model
    "fedbn": (FLOAT - NORM, set(), FLOAT - NORM, {"local_head." + k for k in NORM - TRACKED},
              {"personal"}, NORM - TRACKED),
    "scaffold": (FLOAT, SERVER_C, FLOAT, DELTA_C, POST | {"control"}, set()),
    "fedavgm": (FLOAT, set(), FLOAT, set(), POST, set()),
    "fedadam": (FLOAT, set(), FLOAT, set(), POST, set()),
    "fedyogi": (FLOAT, set(), FLOAT, set(), POST, set()),
    "fedavg_ft": (FLOAT, set(), FLOAT, set(), {"personal"}, set()),
    "fca": (FLOAT, set(), FLOAT, set(), {"personal"}, PERSONAL_HEAD),
    # the sub-centroids stay in the client's state (tests/test_fednpr.py checks the values)
    "fednpr": (FLOAT, set(), FLOAT, set(), POST | {"sub_centroids"}, set()),
    "fednpr_per": (BODY, set(), BODY, set(), {"personal", "sub_centroids"}, HEAD),
}


def test_every_registered_method_has_a_wire_test():
    assert set(WIRE) == set(METHODS)


@pytest.mark.parametrize("name", sorted(WIRE))
def test_what_crosses_the_wire_and_what_stays(name):
    sent, side_sent, replied, side_replied, kept, personal = WIRE[name]
    sim = Simulation(get_method(name, **FAST.get(name, {})), tiny_cnn, blobs(absent={0: 2}),
                     num_rounds=1, progress=False)
    message, reply, state = one_round(sim)
    assert set(message.arrays) == sent
    assert set(message.side) == side_sent
    assert set(reply.arrays) == replied
    assert set(reply.side) == side_replied
    assert populated(state) == kept
    assert set(state.personal) - TRACKED == personal
    if state.post_local is not None:  # the whole model after local training, counters included
        assert set(state.post_local) == set(sim.model_.state_dict())


def test_fedlc_global_counts_cross_the_wire_and_come_back_summed():
    data = blobs(absent={0: 2})
    sim = simulate(FedLC(fedlc_counts="global"), rounds=1, data=data)
    message, reply, _ = one_round(sim)
    assert set(reply.arrays) == FLOAT and set(reply.side) == {"class_counts"}
    local = np.bincount(data.train[0].labels.numpy(), minlength=3)
    assert reply.side["class_counts"].tolist() == local.tolist()
    total = sum(np.bincount(data.train[k].labels.numpy(), minlength=3) for k in range(3))
    assert message.side["global_class_counts"].tolist() == [float(c) for c in total]
    assert "global_class_counts" not in FedLC().message_for(sim.state_, 0).side


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_runs_two_rounds_with_finite_history(name):
    sim = simulate(get_method(name, lr=0.1, **FAST.get(name, {})), evaluate_clients=True)
    rounds = sim.history_.rounds
    assert list(rounds["round"]) == [1, 2]
    for column in ("train_loss", "gen_balanced_accuracy", "spec_balanced_accuracy"):
        assert np.isfinite(rounds[column]).all(), column
    assert all(torch.isfinite(v).all() for v in sim.state_.weights.values()
               if v.is_floating_point())


# ------------------------------------------------------------------ 4. FedRS
def test_fedrs_with_every_class_present_is_cross_entropy():
    method = FedRS(alpha=0.3)
    model = method.prepare_model(tiny_cnn())
    ctx = context([5, 2, 1])
    method.before_local_training(model, ctx)
    x, y = batch()
    assert torch.equal(method.local_loss(model, (x, y), ctx), F.cross_entropy(model(x), y))


def test_fedrs_scales_an_absent_class_logit_by_alpha():
    method = FedRS(alpha=0.3)
    model = method.prepare_model(tiny_cnn())
    assert model.head.bias is None and "head.bias" not in model.state_dict()
    ctx = context([5, 0, 1])
    method.before_local_training(model, ctx)
    x, _ = batch()
    z = method.restricted_logits(model, x, ctx)
    raw = model(x)
    assert torch.equal(z[:, 1], 0.3 * raw[:, 1])  # absent: alpha * w_c^T h
    assert torch.equal(z[:, [0, 2]], raw[:, [0, 2]])  # present: unchanged
    h = model.features(x)
    assert torch.allclose(z[:, 1], 0.3 * (h @ model.head.weight[1]), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ 5. FedLC
def test_fedlc_calibrated_ce_with_equal_counts_is_cross_entropy():
    method = FedLC(tau=2.0)
    model = tiny_cnn()
    ctx = context([4, 4, 4])
    method.before_local_training(model, ctx)
    x, y = batch()
    loss = method.local_loss(model, (x, y), ctx)
    assert torch.allclose(loss, F.cross_entropy(model(x), y), atol=1e-6)


def test_fedlc_flags_the_disputed_paper_form():
    with pytest.warns(UserWarning, match="disputed"):
        FedLC(fedlc_form="paper")


# ------------------------------------------------------------------ 6. FedRoD
def test_fedrod_personal_loss_reaches_only_the_personal_head():
    method = FedRoD()
    model = method.prepare_model(tiny_cnn())
    x, y = batch()
    h = model.features(x)
    method.personal_loss(model, h, model.classify(h), y).backward()
    for name, p in model.named_parameters():
        moved = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert moved == name.startswith("personal_head."), name


def test_fedrod_personalized_prediction_is_generic_plus_personal_logits():
    sim = simulate(FedRoD(lr=0.1))
    x, _ = batch()
    two_heads = copy.deepcopy(sim.model_)
    two_heads.load_state_dict({**sim.state_.weights, **sim.client_states_[1].personal})
    with torch.no_grad():
        z_g, z_p, _ = two_heads.eval().forward_heads(x)
        combined = sim.client_model(1).eval()(x)
    assert not torch.equal(sim.client_states_[1].personal["personal_head.weight"],
                           sim.initial_weights_["personal_head.weight"])
    assert torch.allclose(combined, z_g + z_p, atol=1e-5)


# ------------------------------------------------------------------ 7. FedRep
class RecordingFedRep(FedRep):
    """Logs, at every optimizer step, the phase and the parameters whose gradient is non-zero."""

    def local_loss(self, model, batch, ctx):
        self.phase = ctx.extras["fedrep_phase"]
        return super().local_loss(model, batch, ctx)

    def make_optimizer(self, model, *, lr):
        optimizer = super().make_optimizer(model, lr=lr)
        self.log, step = [], optimizer.step

        def logged_step(*args, **kwargs):
            moved = {n for n, p in model.named_parameters()
                     if p.grad is not None and bool(p.grad.abs().sum() > 0)}
            self.log.append((self.phase, moved))
            return step(*args, **kwargs)

        optimizer.step = logged_step
        return optimizer


def test_fedrep_trains_head_then_body_never_both():
    method = RecordingFedRep(lr=0.1, batch_size=8, head_epochs=2, body_epochs=1)
    sim = Simulation(method, tiny_cnn, blobs(), num_rounds=1, progress=False)
    one_round(sim)
    params = {n for n, _ in tiny_cnn().named_parameters()}
    phases = [phase for phase, _ in method.log]
    assert phases == ["head"] * 6 + ["body"] * 3  # 24 examples, batch 8
    for phase, moved in method.log:
        expected = HEAD if phase == "head" else params - HEAD
        assert moved == expected


# ------------------------------------------------------------------ 8. FedBABU
def test_fedbabu_head_is_bit_identical_after_federated_rounds():
    sim = simulate(FedBABU(lr=0.1, weight_decay=0.01, ft_epochs=1), rounds=3)
    initial = {k: sim.initial_weights_[k] for k in HEAD}
    assert same_weights({k: sim.state_.weights[k] for k in HEAD}, initial)
    for k in range(3):
        assert same_weights({n: sim.client_states_[k].personal[n] for n in HEAD}, initial)
    body = "body.0.weight"
    assert not torch.equal(sim.state_.weights[body], sim.initial_weights_[body])


def test_fedbabu_fine_tunes_for_evaluation_only_and_reproducibly():
    sim = simulate(FedBABU(lr=0.1, ft_epochs=2), rounds=1)
    first = {k: v.clone() for k, v in sim.client_model(0).state_dict().items()}
    again = sim.client_model(0).state_dict()
    assert same_weights(first, dict(again))
    assert not torch.equal(first["head.weight"], sim.initial_weights_["head.weight"])
    assert torch.equal(sim.client_states_[0].personal["head.weight"],
                       sim.initial_weights_["head.weight"])
    head_only = simulate(FedBABU(lr=0.1, ft_epochs=2, babu_ft_part="head"), rounds=1)
    tuned = head_only.client_model(0).state_dict()
    assert torch.equal(tuned["body.0.weight"], head_only.state_.weights["body.0.weight"])
    assert not torch.equal(tuned["head.weight"], head_only.initial_weights_["head.weight"])


# ------------------------------------------------------------------ 9. Ditto
def test_ditto_personal_extra_gradient_is_lambda_times_distance():
    method, lam = Ditto(lam=0.7), 0.7
    model = tiny_cnn()
    anchor = {n: p.detach() + 0.1 * torch.randn_like(p)
              for n, p in model.named_parameters()}
    x, y = batch()

    def grads(phase):
        model.zero_grad()
        ctx = context([2, 2, 2], anchor=anchor)
        ctx.extras["ditto_phase"] = phase
        method.local_loss(model, (x, y), ctx).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, personal = grads("global"), grads("personal")
    for n, p in model.named_parameters():
        assert torch.allclose(personal[n] - plain[n], lam * (p.detach() - anchor[n]), atol=1e-6)


def test_ditto_with_lambda_zero_personal_model_is_local_training_bit_for_bit():
    ditto = simulate(Ditto(lr=0.1, lam=0.0), rounds=2)
    alone = simulate(LocalOnly(lr=0.1), rounds=2)
    for k in range(3):
        assert same_weights(ditto.client_states_[k].method["personal_model"],
                            alone.client_states_[k].personal)


def test_ditto_global_model_is_fedavgs_bit_for_bit():
    ditto = simulate(Ditto(lr=0.1, lam=1.0), rounds=2)
    fedavg = simulate(FedAvg(lr=0.1), rounds=2)
    assert same_weights(ditto.state_.weights, fedavg.state_.weights)
    own = ditto.client_model(0).state_dict()
    assert same_weights(dict(own), ditto.client_states_[0].method["personal_model"])


# ------------------------------------------------------------------ 10. MOON
class TinyBase(nn.Module):
    """h = x (2-d); a linear head."""

    feature_dim = 2

    def __init__(self):
        super().__init__()
        self.body = nn.Flatten()
        self.head = nn.Linear(2, 3)

    def features(self, x):
        return self.body(x)

    def classify(self, h):
        return self.head(h)

    def forward(self, x):
        return self.classify(self.features(x))


def _set_projection(model, second_layer):
    with torch.no_grad():
        model.projection[0].weight.copy_(torch.eye(2))
        model.projection[0].bias.zero_()
        model.projection[2].weight.copy_(second_layer)
        model.projection[2].bias.zero_()


def test_moon_contrastive_term_value_through_the_method():
    method = MOON(mu=1.0, temperature=0.5, out_dim=4, head_input="features")
    model = method.prepare_model(TinyBase())
    identity = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    rotated = torch.tensor([[0.0, -1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # r_p ⊥ r
    _set_projection(model, rotated)
    previous = copy.deepcopy(model.state_dict())
    _set_projection(model, identity)  # the model being trained equals the global one: r = r_g
    x = torch.rand(5, 2, generator=torch.Generator().manual_seed(0)) + 0.1
    y = torch.tensor([0, 1, 2, 0, 1])
    ctx = context([2, 2, 1], state=ClientState(method={"previous_model": previous}))
    method.before_local_training(model, ctx)
    extra = (method.local_loss(model, (x, y), ctx) - F.cross_entropy(model(x), y)).detach()
    assert float(extra) == pytest.approx(-math.log(math.e**2 / (math.e**2 + 1)), abs=1e-6)
    assert float(extra) == pytest.approx(0.1269, abs=1e-4)
    first_round = context([2, 2, 1])  # no previous model yet: r_p = r_g = r
    method.before_local_training(model, first_round)
    extra = method.local_loss(model, (x, y), first_round) - F.cross_entropy(model(x), y)
    extra = extra.detach()
    assert float(extra) == pytest.approx(math.log(2), abs=1e-6)


# ------------------------------------------------------------------ 11. CReFF
def test_creff_client_gradients_are_per_class_means_on_real_features():
    sim = Simulation(CReFF(**FAST["creff"]), tiny_cnn, blobs(absent={0: 2}), num_rounds=1,
                     progress=False)
    message, reply, _ = one_round(sim)
    model = tiny_cnn()
    model.load_state_dict({**sim.initial_weights_, **dict(message.arrays)}, strict=False)
    model.eval()
    data = sim.dataset.train[0]
    w = message.side["creff.classifier.weight"].clone().requires_grad_(True)
    b = message.side["creff.classifier.bias"].clone().requires_grad_(True)
    x1 = data.images[data.labels == 1]
    ce = F.cross_entropy(F.linear(model.features(x1).detach(), w, b),
                         torch.ones(len(x1), dtype=torch.long))
    gw, gb = torch.autograd.grad(ce, [w, b])
    assert torch.allclose(reply.side["creff.grad.1.weight"], gw, atol=1e-6)
    assert torch.allclose(reply.side["creff.grad.1.bias"], gb, atol=1e-6)


def test_creff_retrained_classifier_never_overwrites_the_global_head():
    creff = simulate(CReFF(lr=0.1, **FAST["creff"]), rounds=2)
    fedavg = simulate(FedAvg(lr=0.1), rounds=2)
    assert same_weights(creff.state_.weights, fedavg.state_.weights)
    retrained = creff.state_.extra["creff_classifier"]
    evaluated = creff.global_model().state_dict()
    assert torch.equal(evaluated["head.weight"], retrained["weight"])
    assert torch.equal(evaluated["body.0.weight"], creff.state_.weights["body.0.weight"])
    assert not torch.equal(retrained["weight"], creff.state_.weights["head.weight"])
    message = creff.algorithm.message_for(creff.state_, 0)
    assert torch.equal(message.arrays["head.weight"], creff.state_.weights["head.weight"])
    assert torch.equal(message.side["creff.classifier.weight"], retrained["weight"])


def test_creff_feature_matching_reduces_the_gradient_distance():
    method = CReFF(features_per_class=8, match_steps=30)
    g = torch.Generator().manual_seed(0)
    classifier = {"weight": torch.randn(3, 4, generator=g), "bias": torch.zeros(3)}
    target = {0: [torch.randn(3, 4, generator=g), torch.randn(3, generator=g)]}
    start = torch.randn(24, 4, generator=g)

    def distance(features):
        w = classifier["weight"].clone().requires_grad_(True)
        b = classifier["bias"].clone().requires_grad_(True)
        ce = F.cross_entropy(F.linear(features[:8], w, b), torch.zeros(8, dtype=torch.long))
        return float(gradient_match_distance(torch.autograd.grad(ce, [w, b]), target[0]))

    matched = method.match_features(start, classifier, ["weight", "bias"], target)
    assert distance(matched) < distance(start)
    assert torch.equal(matched[8:], start[8:])  # classes without gradients are not moved


# ------------------------------------------------------------------ core hooks
def test_prepare_model_runs_under_the_seed_and_keeps_the_base_initialisation():
    rod = Simulation(FedRoD(), tiny_cnn, blobs(), num_rounds=1, progress=False, seed=3)
    avg = Simulation(FedAvg(), tiny_cnn, blobs(), num_rounds=1, progress=False, seed=3)
    assert set(rod.initial_weights_) == set(avg.initial_weights_) | PERSONAL_HEAD
    assert same_weights({k: rod.initial_weights_[k] for k in avg.initial_weights_},
                        avg.initial_weights_)
    again = Simulation(FedRoD(), tiny_cnn, blobs(), num_rounds=1, progress=False, seed=3)
    assert same_weights(rod.initial_weights_, again.initial_weights_)


def test_spec_model_post_local_or_global():
    post = simulate(FedAvg(lr=0.1), rounds=1)
    own = dict(post.client_model(0).state_dict())
    assert same_weights(own, post.post_local_weights(0))
    assert not torch.equal(own["head.weight"], post.state_.weights["head.weight"])
    glob = simulate(FedAvg(lr=0.1, spec_model="global"), rounds=1)
    assert glob.client_states_[0].post_local is None
    assert torch.equal(glob.client_model(0).state_dict()["head.weight"],
                       glob.state_.weights["head.weight"])


def test_evaluate_clients_adds_specialization_to_fedavg():
    assert "spec_balanced_accuracy" not in simulate(FedAvg(), rounds=1).history_.rounds
    sim = simulate(FedAvg(), rounds=1, evaluate_clients=True)
    assert "spec_balanced_accuracy" in sim.history_.rounds
    assert "spec_balanced_accuracy" in sim.history_.clients


def test_two_head_classifier_keeps_the_base_model_behaviour():
    torch.manual_seed(0)
    base = tiny_cnn()
    reference = copy.deepcopy(base)
    model = TwoHeadClassifier(base)
    assert set(model.state_dict()) == set(reference.state_dict()) | PERSONAL_HEAD
    x, _ = batch()
    model.eval()
    reference.eval()
    assert torch.equal(model(x), reference(x))
    z_g, z_p, h = model.forward_heads(x)
    assert torch.equal(z_g, reference(x)) and z_p.shape == (6, 3)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.head.weight.add_(1.0)
    assert not torch.equal(clone(x), model(x))  # the copy's base uses the copy's modules
    projected = ProjectionHeadModel(tiny_cnn(), out_dim=5)
    assert projected.head.in_features == 5 and projected(x).shape == (6, 3)
    with pytest.raises(TypeError, match="TwoHeadClassifier: 'base' must be an nn.Module"):
        TwoHeadClassifier(nn.Linear(2, 2))


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (FedRS, {"alpha": 1.5}, "FedRS: 'alpha' must be a float >= 0 and <= 1, got 1.5."),
        (FedRS, {"fedrs_mode": "medium"}, "FedRS: 'fedrs_mode' must be one of 'hard', 'soft'"),
        (FedLC, {"fedlc_form": "x"}, "FedLC: 'fedlc_form' must be one of"),
        (FedLC, {"fedlc_counts": "x"}, "FedLC: 'fedlc_counts' must be one of"),
        (FedLC, {"tau": -1.0}, "FedLC: 'tau' must be a float >= 0"),
        (FedLC, {"count_floor": 0.0}, "FedLC: 'count_floor' must be a float > 0"),
        (FedLC, {"loss": "bsm"}, "FedLC: 'loss' must be 'ce'"),
        (FedRep, {"head_epochs": -1}, "FedRep: 'head_epochs' must be an int >= 0"),
        (FedRep, {"head_epochs": 0, "body_epochs": 0}, "'head_epochs' and 'body_epochs'"),
        (FedBABU, {"ft_epochs": -1}, "FedBABU: 'ft_epochs' must be an int >= 0"),
        (FedBABU, {"babu_ft_part": "body"}, "FedBABU: 'babu_ft_part' must be one of"),
        (FedBABU, {"ft_lr": 0.0}, "FedBABU: 'ft_lr' must be None or a float > 0"),
        (FedBABU, {"head_prefixes": ()}, "FedBABU: 'head_prefixes' must be a non-empty"),
        (Ditto, {"lam": -1.0}, "Ditto: 'lam' must be a float >= 0"),
        (Ditto, {"personal_epochs": 0}, "Ditto: 'personal_epochs' must be an int >= 1"),
        (MOON, {"mu": -1.0}, "MOON: 'mu' must be a float >= 0"),
        (MOON, {"temperature": 0.0}, "MOON: 'temperature' must be a float > 0"),
        (MOON, {"out_dim": 0}, "MOON: 'out_dim' must be an int >= 1"),
        (MOON, {"head_input": "x"}, "MOON: 'head_input' must be one of"),
        (CReFF, {"features_per_class": 0}, "CReFF: 'features_per_class' must be an int >= 1"),
        (CReFF, {"match_steps": -1}, "CReFF: 'match_steps' must be an int >= 0"),
        (CReFF, {"feature_lr": 0.0}, "CReFF: 'feature_lr' must be a float > 0"),
        (CReFF, {"retrain_epochs": 0}, "CReFF: 'retrain_epochs' must be an int >= 1"),
        (CReFF, {"retrain_lr": 0.0}, "CReFF: 'retrain_lr' must be a float > 0"),
        (CReFF, {"retrain_batch_size": 0}, "CReFF: 'retrain_batch_size' must be an int >= 1"),
        (FedAvg, {"spec_model": "x"}, "FedAvg: 'spec_model' must be one of 'post_local'"),
        (FedAvg, {"spec_model": "personal"}, "FedAvg: 'spec_model'='personal' needs a method"),
    ],
)
def test_invalid_options_are_named(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_simulation_rejects_a_non_bool_evaluate_clients():
    with pytest.raises(ValueError, match="Simulation: 'evaluate_clients' must be None or"):
        Simulation(FedAvg(), tiny_cnn, blobs(), num_rounds=1, progress=False,
                   evaluate_clients="yes")


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize(
    "method",
    [CReFF(lr=0.1, **FAST["creff"]), MOON(lr=0.1), FedLC(lr=0.1, fedlc_counts="global"),
     Ditto(lr=0.1), FedBABU(lr=0.1, ft_epochs=1)],
    ids=lambda m: m.name,
)
def test_resume_with_method_state_equals_uninterrupted_run(tmp_path, method):
    whole = simulate(method, rounds=3)
    Simulation(method, tiny_cnn, blobs(), num_rounds=2, progress=False,
               checkpoint_dir=tmp_path).run()
    resumed = Simulation(method, tiny_cnn, blobs(), num_rounds=3, progress=False,
                         checkpoint_dir=tmp_path)
    resumed.run(resume=True)
    assert same_weights(whole.state_.weights, resumed.state_.weights)
    columns = ["round", "train_loss", "gen_balanced_accuracy"]
    assert whole.history_.rounds[columns].equals(resumed.history_.rounds[columns])


def test_fedper_global_model_uses_the_weighted_mean_of_uploaded_heads():
    sim = Simulation(get_method("fedper", lr=0.1), tiny_cnn, blobs(), num_rounds=2,
                     progress=False)
    sim.run()
    heads = [sim.client_states_[k].personal for k in sim.dataset.client_ids()]
    sizes = [len(sim.dataset.train[k]) for k in sim.dataset.client_ids()]
    expected = {key: sum(n * h[key] for h, n in zip(heads, sizes, strict=True)) / sum(sizes)
                for key in ("head.weight", "head.bias")}
    evaluated = sim.global_model().state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(evaluated[key], value)
        # training never used it: the server's own head is still the initial one
        assert torch.equal(sim.state_.weights[key], sim.initial_weights_[key])
    message = sim.algorithm.message_for(sim.state_, 0)
    assert not set(message.arrays) & HEAD and not message.side

    no_upload = get_method("fedper", lr=0.1, pfl_global_head="none")
    sim = Simulation(no_upload, tiny_cnn, blobs(), num_rounds=1, progress=False)
    sim.run()
    assert torch.equal(sim.global_model().state_dict()["head.weight"],
                       sim.initial_weights_["head.weight"])
    with pytest.raises(ValueError, match="'pfl_global_head' must be one of 'avg_local', 'none'"):
        get_method("fedper", pfl_global_head="mean")


def test_fedbabu_fine_tunes_each_client_once_per_round():
    from fedlib.evaluation import specialization_table
    from fedlib.methods import FedBABU

    class CountingBABU(FedBABU):
        calls = 0

        def finetune_for_eval(self, model, ctx):
            type(self).calls += 1
            super().finetune_for_eval(model, ctx)

    sim = Simulation(CountingBABU(lr=0.1, ft_epochs=1), tiny_cnn, blobs(), num_rounds=1,
                     progress=False)
    sim.run()
    assert CountingBABU.calls == 3  # the last round's client evaluation
    table = specialization_table(sim)
    assert CountingBABU.calls == 3  # reused, not fine-tuned again
    last = sim.history_.clients
    assert list(table["accuracy"]) == list(last["spec_accuracy"])
