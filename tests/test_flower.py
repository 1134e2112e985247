"""fedlib on Flower, in one process: the adapter's Strategy and ClientApp exchange real Flower
messages (serialized to Flower's wire objects and rebuilt) through an engine-free grid, and give
the in-process simulator's result for every method. The deployment on loopback (SuperLink and
SuperNodes) is tests/test_flower_loopback.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from toy_federation import blobs, tiny_cnn

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402

from fedlib.core import ClientReply, ClientState, RoundMessage, Simulation  # noqa: E402
from fedlib.flower import (  # noqa: E402
    FedlibStrategy,
    NodeFailure,
    NodeStateStore,
    run_in_process,
    sample_partitions,
)
from fedlib.flower.app import RUN_CONFIG, method_and_model  # noqa: E402
from fedlib.flower.client import FedlibClient, Site, make_client_app  # noqa: E402
from fedlib.flower.inprocess import InProcessGrid, _server_identity, in_process_setup  # noqa: E402
from fedlib.flower.records import (  # noqa: E402
    client_reply,
    message_content,
    reply_content,
    round_message,
    state_from_bytes,
    state_to_bytes,
)
from fedlib.flower.sites import read_site, write_site  # noqa: E402
from fedlib.methods import METHODS, FedAvg, get_method  # noqa: E402

FAST = {"creff": {"retrain_epochs": 5, "match_steps": 5}, "fedbabu": {"ft_epochs": 1}}
SEGMENTATION = ("fedmix", "fedst")
"""Segmentation methods (fedlib.segmentation), run on a tiny SynthBUS federation."""


def max_abs_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()),
               default=0.0)


def both(method_fn, model_fn=tiny_cnn, data_fn=blobs, simulation=Simulation, rounds=2,
         **options):
    """The simulator's and the Flower adapter's runs of the same method, seed and clients."""
    sim_options = {k: v for k, v in options.items() if k in ("fraction", "client_sampling")}
    sim = simulation(method_fn(), model_fn, data_fn(), num_rounds=rounds, progress=False,
                     seed=3, eval_every=None, **sim_options)
    sim.run()
    run = run_in_process(method_fn(), model_fn, data_fn(), num_rounds=rounds, seed=3, **options)
    return sim, run


# ------------------------------------------------------------------ every method
@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_on_flower_gives_the_simulators_global_weights(name):
    """Bit-identical: same seeds per (round, client), replies sorted by client id, tensors
    that cross Flower's wire unchanged, and one seeded server step (server-side extras such as
    CReFF's synthetic features are equal too)."""
    sim, run = both(lambda: get_method(name, **FAST.get(name, {})))
    assert max_abs_difference(sim.state_.weights, run.strategy.state_.weights) == 0.0
    assert run.strategy.state_.round == 2
    assert [r["clients"] for r in run.strategy.history_] == [[0, 1, 2], [0, 1, 2]]
    tensors = {k for k, v in sim.state_.extra.items() if isinstance(v, torch.Tensor)}
    for key in tensors:
        assert torch.equal(sim.state_.extra[key], run.strategy.state_.extra[key]), key


def test_creffs_server_step_is_seeded_alike_on_flower_and_in_the_simulator():
    """CReFF's server step draws random numbers (initial synthetic features, a fresh classifier,
    shuffles): both drivers seed it by (seed, round) through one function, so the re-trained
    classifier and the evaluation weights agree, whatever the clients drew."""
    sim, run = both(lambda: get_method("creff", **FAST["creff"]), rounds=3)
    strategy = run.strategy
    assert max_abs_difference(sim.state_.weights, strategy.state_.weights) <= 1e-6
    for key in ("creff_features", "creff_classifier"):
        ours, theirs = sim.state_.extra[key], strategy.state_.extra[key]
        if isinstance(ours, torch.Tensor):
            ours, theirs = {key: ours}, {key: theirs}
        assert max_abs_difference(ours, theirs) <= 1e-6, key
    evaluated = sim.algorithm.eval_weights(sim._full_global_weights(), sim.state_)
    deployed = strategy.algorithm.eval_weights(strategy.global_weights(), strategy.state_)
    assert max_abs_difference(evaluated, deployed) <= 1e-6
    # the server step does not continue a client's random stream: from the same replies, the
    # same seed gives the same fresh classifier, another seed another one
    from fedlib.core.rounds import aggregate_round

    replies = sim.local_updates()
    one = aggregate_round(sim.algorithm, sim.state_, replies, seed=sim.seed)
    again = aggregate_round(sim.algorithm, sim.state_, replies, seed=sim.seed)
    other = aggregate_round(sim.algorithm, sim.state_, replies, seed=sim.seed + 1)
    assert torch.equal(one.extra["creff_classifier"]["weight"],
                       again.extra["creff_classifier"]["weight"])
    assert not torch.equal(one.extra["creff_classifier"]["weight"],
                           other.extra["creff_classifier"]["weight"])


@pytest.mark.parametrize("name", SEGMENTATION)
def test_segmentation_methods_on_flower_give_the_simulators_global_weights(name):
    from fedlib.data import segmentation_view
    from fedlib.models import UNet
    from fedlib.segmentation import SegmentationSimulation, get_segmentation_method

    sim, run = both(
        lambda: get_segmentation_method(name, batch_size=8),
        model_fn=lambda: UNet(1, 1, width=2, depth=1),
        data_fn=lambda: segmentation_view("synthbus", "fedmix", image_size=16, scale=0.08,
                                          seed=0),
        simulation=SegmentationSimulation,
    )
    assert max_abs_difference(sim.state_.weights, run.strategy.state_.weights) == 0.0


def test_sampled_rounds_match_the_simulator():
    sim, run = both(lambda: FedAvg(), rounds=3, fraction=2 / 3, client_sampling="weighted")
    assert [r["clients"] for r in run.strategy.history_] == [sim.sample_clients(r)
                                                             for r in range(3)]
    assert max_abs_difference(sim.state_.weights, run.strategy.state_.weights) == 0.0


@pytest.mark.parametrize("sampling", ["uniform", "weighted"])
def test_sample_partitions_is_the_simulators_rule(sampling):
    data = blobs(num_clients=7)
    for fraction in (0.1, 0.3, 0.5, 1.0):
        sim = Simulation(FedAvg(), tiny_cnn, data, num_rounds=1, fraction=fraction, seed=11,
                         client_sampling=sampling, progress=False)
        sizes = [len(data.train[k]) for k in range(7)]
        for r in range(5):
            assert sample_partitions(r, num_partitions=7, fraction=fraction, seed=11,
                                     client_sampling=sampling, sizes=sizes) == \
                sim.sample_clients(r)


@pytest.mark.parametrize("name", ["fedavg", "fedbabu", "ditto"])
def test_node_side_evaluation_matches_the_simulators_client_scores(name):
    """gen_* of the global model and spec_* of each client's own model (post-local model,
    fine-tuned model, personal model) on each node's test split."""
    data = blobs()
    sim = Simulation(get_method(name, **FAST.get(name, {})), tiny_cnn, data, num_rounds=2,
                     seed=3, evaluate_clients=True, progress=False)
    sim.run()
    run = run_in_process(get_method(name, **FAST.get(name, {})), tiny_cnn, data, num_rounds=2,
                         seed=3, evaluate=True, evaluate_clients=True)
    keys = ("gen_accuracy", "gen_balanced_accuracy", "spec_accuracy", "spec_balanced_accuracy")
    expected = [{k: row[k] for k in ("round", "client", *keys)}
                for row in sim.history_.client_records]
    found = [{k: row[k] for k in ("round", "client", *keys)}
             for row in run.strategy.client_records_]
    assert found == expected


# ------------------------------------------------------------------ what crosses the wire
def test_a_round_message_survives_the_records_unchanged():
    message = RoundMessage(
        round=4, arrays={"w": torch.randn(3, 2), "n": torch.tensor(7)},
        side={"counts": torch.tensor([1.0, 0.0, 5.0], dtype=torch.float64)},
        config={"lr": 0.05, "milestones": (2, 3)})
    content = message_content(message, **{"partition-id": 2, "commit-round": 3})
    assert set(content.array_records) == {"arrays", "side"}
    back = round_message(content)
    assert back.round == 4 and back.config == {"lr": 0.05, "milestones": [2, 3]}
    for channel in ("arrays", "side"):
        sent, got = getattr(message, channel), getattr(back, channel)
        assert sent.keys() == got.keys()
        assert all(torch.equal(sent[k], got[k]) and sent[k].dtype == got[k].dtype for k in sent)
    assert dict(content["fedlib"]) == {"round": 4, "partition-id": 2, "commit-round": 3}


def test_a_reply_keeps_arrays_side_and_metrics_apart():
    reply = ClientReply(client_id=1, arrays={"w": torch.ones(2)}, num_examples=24,
                        side={"scaffold.dc.w": torch.zeros(2)},
                        metrics={"train_loss": 0.5})
    content = reply_content(reply, **{"partition-id": 1, "round": 0})
    assert dict(content["metrics"]) == {"num-examples": 24, "train_loss": 0.5}
    back = client_reply(content, client_id=1)
    assert back.num_examples == 24 and back.metrics == {"train_loss": 0.5}
    assert set(back.arrays) == {"w"} and set(back.side) == {"scaffold.dc.w"}


def test_config_that_would_not_survive_the_wire_is_refused():
    message = RoundMessage(round=0, arrays={}, config={"schedule": {"lr": 0.1}})
    with pytest.raises(TypeError, match="config entry 'schedule' must be a bool, int, float"):
        message_content(message)


def test_client_state_round_trips_through_bytes():
    state = ClientState(personal={"head.weight": torch.randn(3, 2)},
                        optimizer={"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": []},
                        method={"control": {"w": torch.ones(2)}})
    back = state_from_bytes(state_to_bytes(state))
    assert torch.equal(back.personal["head.weight"], state.personal["head.weight"])
    assert torch.equal(back.method["control"]["w"], torch.ones(2))
    assert back.post_local is None and back.optimizer["state"][0]["step"] == 3.0


def test_the_wire_log_counts_arrays_and_side_bytes_per_message():
    run = run_in_process(get_method("scaffold"), tiny_cnn, blobs(), num_rounds=1, seed=0)
    rows = [r for r in run.grid.wire_ if r["message_type"] == "train"]
    assert len(rows) == 6 and {r["direction"] for r in rows} == {"down", "up"}
    for row in rows:  # SCAFFOLD sends c down and c_i's change up, beside the weights
        assert row["bytes_side"] > row["bytes_arrays"] / 2
        # Flower ships each distinct array once per message (objects are content-addressed):
        # the message is at most its records, and at least its largest one
        records = sum(v for k, v in row.items() if k.startswith("bytes_"))
        assert row["bytes_arrays"] <= row["bytes"] <= records + 1024


# ------------------------------------------------------------------ state on the node
def _store(tmp_path=None) -> NodeStateStore:
    context = Context(run_id=5, node_id=9, node_config={}, state=RecordDict(), run_config={})
    return NodeStateStore(context, partition_id=1, state_dir=tmp_path)


@pytest.mark.parametrize("on_disk", [False, True])
def test_the_node_commits_a_state_only_when_its_round_was_aggregated(tmp_path, on_disk):
    store = _store(tmp_path if on_disk else None)
    assert store.load(-1).method == {}
    store.save_pending(0, ClientState(method={"step": 1}))
    assert store.load(0).method == {"step": 1}  # round 0 aggregated: committed
    store.save_pending(1, ClientState(method={"step": 2}))
    assert store.load(0).method == {"step": 1}  # round 1's reply dropped: state of round 0
    store.save_pending(2, ClientState(method={"step": 3}))
    assert store.load(2).method == {"step": 3}
    if on_disk:
        assert sorted(p.name for p in (tmp_path / "run-5").iterdir()) == [
            "partition-1.committed.pt"]


def test_a_node_that_lost_its_state_says_so():
    store = _store()
    with pytest.raises(RuntimeError, match="aggregated this client's reply of round 3, but the "
                                           "node holds none state"):
        store.load(2)


# ------------------------------------------------------------------ failures
def _disconnect_after_first_round(run, record, listed=False):
    if record["round"] == 1:
        run.grid.disconnect(1, listed=listed)


def test_a_lost_node_is_skipped_when_configured(caplog):
    run = run_in_process(FedAvg(), tiny_cnn, blobs(), num_rounds=3, seed=0,
                         on_node_failure="skip", on_round=_disconnect_after_first_round)
    history = run.strategy.history_
    assert [(r["clients"], r["failed"]) for r in history] == [
        ([0, 1, 2], []), ([0, 2], [1]), ([0, 2], [1])]
    assert run.strategy.committed_ == {0: 2, 1: 0, 2: 2}
    assert "is not connected" in caplog.text


def test_a_disconnected_node_fails_the_round_before_anyone_trains():
    runs = []

    def disconnect(run, record):
        runs.append(run)
        _disconnect_after_first_round(run, record)
        run.grid.wire_.clear()

    with pytest.raises(NodeFailure, match=r"round 2 failed \(client 1: node \d+ is not "
                                          r"connected\); the global model was left as after "
                                          r"round 1 \(on_node_failure='fail'\)"):
        run_in_process(FedAvg(), tiny_cnn, blobs(), num_rounds=2, seed=0, on_round=disconnect)
    assert runs[0].grid.wire_ == []  # no round-2 message was sent


def test_a_lost_node_fails_the_run_when_configured():
    holder = {}

    def disconnect(run, record):
        holder["run"] = run
        _disconnect_after_first_round(run, record, listed=True)

    with pytest.raises(NodeFailure, match=r"round 2 failed \(client 1: no reply before the "
                                          r"round's timeout\); the global model was left as "
                                          r"after round 1 \(on_node_failure='fail'\)"):
        run_in_process(FedAvg(), tiny_cnn, blobs(), num_rounds=3, seed=0, on_round=disconnect)
    assert holder["run"].strategy.state_.round == 1


class NaNOnClient1(FedAvg):
    def after_local_training(self, model, ctx):
        if ctx.client_id == 1:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_a_non_finite_update_never_reaches_the_model():
    run = run_in_process(NaNOnClient1(), tiny_cnn, blobs(), num_rounds=2, seed=0,
                         on_node_failure="skip")
    assert [r["failed"] for r in run.strategy.history_] == [[1], [1]]
    assert all(torch.isfinite(v).all() for v in run.strategy.state_.weights.values())
    with pytest.raises(NodeFailure, match="client 1: error on the node: FloatingPointError: "
                                          "its update has non-finite values"):
        run_in_process(NaNOnClient1(), tiny_cnn, blobs(), num_rounds=1, seed=0)


def test_every_partition_must_answer_the_handshake():
    app = make_client_app(in_process_setup(FedAvg(), tiny_cnn, blobs(), seed=0))
    grid = InProcessGrid(app, [{"partition-id": p, "num-partitions": 3} for p in range(3)])
    grid.disconnect(2)
    strategy = FedlibStrategy(FedAvg(), tiny_cnn, identify_timeout=0.2)
    with _server_identity(1), pytest.raises(
            TimeoutError, match=r"only partitions \[0, 1\] of 3 have answered"):
        strategy.identify(grid)


def test_nodes_that_disagree_on_the_federation_are_refused():
    app = make_client_app(in_process_setup(FedAvg(), tiny_cnn, blobs(), seed=0))
    grid = InProcessGrid(app, [{"partition-id": 0, "num-partitions": 3},
                               {"partition-id": 1, "num-partitions": 2}])
    with _server_identity(1), pytest.raises(
            ValueError, match=r"declares [23] partitions and 3 classes; another declared [23] "):
        FedlibStrategy(FedAvg(), tiny_cnn).identify(grid)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"seed": -1}, ValueError, "FedlibStrategy: 'seed' must be an int >= 0, got -1."),
        ({"fraction": 0.0}, ValueError, "'fraction' must be a float > 0 and <= 1, got 0.0."),
        ({"client_sampling": "random"}, ValueError, "'client_sampling' must be one of"),
        ({"on_node_failure": "retry"}, ValueError, "'on_node_failure' must be one of"),
        ({"evaluate": "yes"}, TypeError, "'evaluate' must be"),
        ({"identify_timeout": 0.0}, ValueError, "'identify_timeout' must be a float > 0"),
    ],
)
def test_strategy_validates_its_options(options, error, message):
    with pytest.raises(error, match=re.escape(message)):
        FedlibStrategy(FedAvg(), tiny_cnn, **options)


def test_strategy_needs_a_callable_model():
    with pytest.raises(TypeError, match="FedlibStrategy: 'model_fn' must be callable"):
        FedlibStrategy(FedAvg(), "smallcnn")


# ------------------------------------------------------------------ the deployed app's pieces
def test_run_config_builds_the_method_and_the_model():
    algorithm, model_fn = method_and_model(
        {**RUN_CONFIG, "method": "fedprox", "method-options": "mu=0.5; lr=0.1", "width": 2})
    assert (algorithm.name, algorithm.mu, algorithm.lr) == ("fedprox", 0.5, 0.1)
    assert model_fn().state_dict().keys() == tiny_cnn().state_dict().keys()
    npr, _ = method_and_model({"method": "fedavg", "method-options": "npr=true;npr_lambda=0.2"})
    assert npr.npr_lambda == 0.2


def test_run_config_refuses_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown run config key\(s\) \['rounds'\]"):
        method_and_model({"rounds": 3})


def test_a_site_folder_holds_one_clients_data(tmp_path):
    data = blobs(absent={1: 2})
    write_site(tmp_path / "site1", data, 1)
    site = read_site(tmp_path / "site1")
    assert site.num_classes == 3
    assert torch.equal(site.train.images, data.train[1].images)
    assert torch.equal(site.test.labels, data.test[1].labels)
    assert not np.isin(2, site.train.labels.numpy())


def test_the_identify_reply_carries_the_sites_sizes():
    data = blobs()
    client = FedlibClient(FedAvg(), tiny_cnn, seed=0)
    with _server_identity(1):
        msg = Message(RecordDict(), dst_node_id=7, message_type="query.identify")
    reply = client.identify(msg, Site(data.train[2], data.test[2], 3), 2, 3)
    assert isinstance(reply.content["fedlib"], ConfigRecord)
    assert dict(reply.content["fedlib"]) == {
        "partition-id": 2, "num-partitions": 3, "num-examples": 24, "num-test-examples": 12,
        "num-classes": 3}
