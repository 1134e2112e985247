"""What the simulator's speed and memory work guarantees: the sequential results are those of
the straightforward implementation (seeding, loading, streaming aggregation), clients keep only
what the method and the requested evaluations need, post-local models are rebuilt exactly,
history rows are compact, and client states can live on disk. No timing here: the figures are
printed by ``benchmarks/`` (``make bench``)."""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from test_protocol import run, same
from torch import nn
from toy_federation import blobs, tiny_cnn

from fedlib.core import ClientReply, GlobalState, Simulation, derive_seed, weighted_average
from fedlib.core.aggregation import StreamedReplies, StreamingAverage
from fedlib.core.algorithm import load_weights_into, working_copy
from fedlib.core.protocol import ClientState
from fedlib.core.storage import DiskClientStates, RecordTable
from fedlib.evaluation import evaluate_run
from fedlib.methods import Ditto, FedAvg, FedPer
from fedlib.models import SmallCNN


def history(sim: Simulation) -> tuple[pd.DataFrame, pd.DataFrame]:
    return sim.history_.rounds.drop(columns="seconds"), sim.history_.clients


class HoldsEveryReply(FedAvg):
    """FedAvg's maths through the non-streaming path (an overridden ``aggregate``)."""

    def aggregate(self, state, replies):
        assert not isinstance(replies, StreamedReplies)
        return super().aggregate(state, replies)


# ------------------------------------------------------------------ streaming aggregation
def test_streaming_average_by_hand_and_bit_identical_to_weighted_average():
    # n = (1, 3): (1*(1, 2) + 3*(4, 8)) / 4 = (3.25, 6.5)
    stream = StreamingAverage({0: 1, 1: 3})
    stream.add(0, {"w": torch.tensor([1.0, 2.0])})
    stream.add(1, {"w": torch.tensor([4.0, 8.0])})
    assert torch.equal(stream.result()["w"], torch.tensor([3.25, 6.5]))
    g = torch.Generator().manual_seed(0)
    arrays = [{"a": torch.randn(5, 3, generator=g), "b": torch.randn(7, generator=g)}
              for _ in range(9)]
    sizes = [3, 17, 1, 8, 8, 250, 4, 61, 9]
    stream = StreamingAverage(dict(enumerate(sizes)))
    for k, a in enumerate(arrays):
        stream.add(k, a)
    assert same(stream.result(), weighted_average(arrays, sizes))


def test_stacked_clients_are_added_at_once_within_float64_rounding():
    g = torch.Generator().manual_seed(1)
    arrays = [{"w": torch.randn(4, generator=g)} for _ in range(5)]
    sizes = [2, 7, 1, 9, 4]
    stream = StreamingAverage(dict(enumerate(sizes)))
    stream.add(0, arrays[0])
    stream.add_stacked([1, 2, 3], {"w": torch.stack([a["w"] for a in arrays[1:4]])})
    stream.add(4, arrays[4])
    assert stream.added == [0, 1, 2, 3, 4]
    torch.testing.assert_close(stream.result()["w"], weighted_average(arrays, sizes)["w"],
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="client 4 was already added"):
        stream.add_stacked([4], {"w": arrays[4]["w"][None]})


def test_stacked_clients_of_several_keys_and_dtypes_land_in_their_own_sums():
    """Weights 1 and 3 (normalised 1/4, 3/4): a matrix, a scalar and an integer counter, each
    averaged on its own and returned in its own dtype and shape."""
    stream = StreamingAverage({0: 1, 1: 3})
    stream.add_stacked([0, 1], {
        "m": torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]),
        "s": torch.tensor([2.0, 6.0]),
        "n": torch.tensor([4, 8]),
    })
    out = stream.result()
    assert out["m"].tolist() == [[4.0, 5.0], [6.0, 7.0]]  # (1 a + 3 b) / 4
    assert out["s"].shape == () and out["s"].item() == 5.0
    assert out["n"].dtype == torch.int64 and out["n"].item() == 7


def test_streaming_average_rescales_when_an_announced_client_is_missing():
    """Clients 0 and 2 of (n = 1, 2, 3) arrive: (1*1 + 3*5) / 4 = 4, up to float64 rounding."""
    stream = StreamingAverage({0: 1, 1: 2, 2: 3})
    stream.add(0, {"w": torch.tensor([1.0], dtype=torch.float64)})
    stream.add(2, {"w": torch.tensor([5.0], dtype=torch.float64)})
    torch.testing.assert_close(stream.result()["w"], torch.tensor([4.0], dtype=torch.float64),
                               rtol=1e-15, atol=0)


def test_streaming_average_refuses_bad_input():
    with pytest.raises(ValueError, match="StreamingAverage: 'weights' must be finite"):
        StreamingAverage({0: 0.0})
    stream = StreamingAverage({0: 1, 1: 1})
    with pytest.raises(KeyError, match="client 5 was not announced"):
        stream.add(5, {"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="no client was added"):
        stream.result()
    stream.add(0, {"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="client 0 was already added"):
        stream.add(0, {"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="client 1 sent keys that differ from client 0's"):
        stream.add(1, {"v": torch.zeros(1)})


def test_a_round_streams_and_equals_the_round_that_holds_every_reply():
    seen = []

    class Watches(FedAvg):
        def process_side(self, state, replies):
            seen.append(replies)
            super().process_side(state, replies)

    streamed = run(Watches(lr=0.1), rounds=3, fraction=0.67, seed=2)
    held = run(HoldsEveryReply(lr=0.1), rounds=3, fraction=0.67, seed=2)
    assert same(streamed.state_.weights, held.state_.weights)
    assert history(streamed)[0].equals(history(held)[0])
    assert all(isinstance(r, StreamedReplies) and r.averaged for r in seen)
    assert all(reply.arrays == {} for replies in seen for reply in replies)


def test_a_skipped_client_is_left_out_of_the_streamed_average():
    class NaNForClientOne(FedAvg):
        def local_loss(self, model, batch, ctx):
            loss = super().local_loss(model, batch, ctx)
            return loss * float("nan") if ctx.client_id == 1 else loss

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        streamed = run(NaNForClientOne(lr=0.1), rounds=1, on_client_error="skip")

    class Held(NaNForClientOne, HoldsEveryReply):
        pass

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        held = run(Held(lr=0.1), rounds=1, on_client_error="skip")
    for key, value in held.state_.weights.items():
        torch.testing.assert_close(streamed.state_.weights[key], value, rtol=1e-6, atol=1e-7)


def test_the_average_tests_arrays_for_nan_and_infinity_before_adding_them():
    stream = StreamingAverage({0: 1, 1: 1, 2: 2})
    stream.add(0, {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}, check_finite=True)
    bad = {"w": torch.tensor([float("inf"), 0.0]), "n": torch.tensor(3)}
    with pytest.raises(FloatingPointError, match=r"non-finite values in \['w'\]"):
        stream.add(1, bad, check_finite=True)
    assert stream.added == [0]  # refused, so not added: the sum is untouched
    stream.add(2, {"w": torch.tensor([4.0, 8.0]), "n": torch.tensor(5)}, check_finite=True)
    # clients 0 and 2 of (n = 1, 1, 2): (1*(1, 2) + 2*(4, 8)) / 3 = (3, 6); counters (3+10)/3
    result = stream.result()
    assert torch.equal(result["w"], torch.tensor([3.0, 6.0]))
    assert result["n"].dtype == torch.int64 and int(result["n"]) == 4
    # finite float64 values whose sum overflows are finite all the same
    wide = StreamingAverage({0: 1})
    wide.add(0, {"w": torch.tensor([1.5e308, 1.5e308], dtype=torch.float64)}, check_finite=True)
    assert torch.isfinite(wide.result()["w"]).all()
    nan = StreamingAverage({0: 1})
    with pytest.raises(FloatingPointError, match="non-finite"):
        nan.add(0, {"w": torch.tensor([float("nan")], dtype=torch.float64)}, check_finite=True)


def test_a_client_with_finite_loss_but_non_finite_weights_is_skipped_in_a_later_batch():
    """Clients are filed in batches after they train: a client of the second batch whose
    weights are NaN (its loss is finite) is left out as the non-streaming path leaves it."""
    from fedlib.core.simulation import BOOKKEEPING_BATCH

    many = BOOKKEEPING_BATCH + 8

    class NaNWeights(FedAvg):
        def after_local_training(self, model, ctx):
            if ctx.client_id == BOOKKEEPING_BATCH + 3:
                with torch.no_grad():
                    next(model.parameters()).fill_(float("nan"))

    class Held(NaNWeights, HoldsEveryReply):
        pass

    runs = []
    for method in (NaNWeights(lr=0.1), Held(lr=0.1)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs.append(run(method, rounds=2, data=blobs(num_clients=many, per_client=6),
                            on_client_error="skip"))
        assert [str(w.message).split(":")[0] for w in caught] == [
            f"client {BOOKKEEPING_BATCH + 3} failed in round {r}" for r in (1, 2)]
    streamed, held = runs
    assert history(streamed)[0]["num_clients"].tolist() == [many - 1, many - 1]
    for key, value in held.state_.weights.items():
        torch.testing.assert_close(streamed.state_.weights[key], value, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ seeding and loading
def test_the_global_generator_is_seeded_as_torch_manual_seed_seeds_it():
    sim = Simulation(FedAvg(), tiny_cnn, blobs(), num_rounds=1, progress=False)
    seed = derive_seed(0, 3, 1)
    torch.manual_seed(seed)
    expected = torch.rand(4)
    sim._seed_global(seed)
    assert torch.equal(torch.rand(4), expected)


def dropout_cnn() -> nn.Module:
    return SmallCNN(3, 3, width=2, dropout=0.5)


def test_dropout_runs_are_reproducible_and_resume_bit_exactly(tmp_path):
    """Dropout masks come from the global generator, seeded per (seed, round, client)."""
    def simulate(rounds):
        sim = Simulation(FedAvg(lr=0.1), dropout_cnn, blobs(), num_rounds=rounds,
                         progress=False, seed=7)
        sim.run()
        return sim

    a, b = simulate(3), simulate(3)
    assert same(a.state_.weights, b.state_.weights)
    assert history(a)[0].equals(history(b)[0])
    Simulation(FedAvg(lr=0.1), dropout_cnn, blobs(), num_rounds=2, progress=False, seed=7,
               checkpoint_dir=tmp_path).run()
    resumed = Simulation(FedAvg(lr=0.1), dropout_cnn, blobs(), num_rounds=3, progress=False,
                         seed=7, checkpoint_dir=tmp_path)
    resumed.run(resume=True)
    assert same(a.state_.weights, resumed.state_.weights)
    no_dropout = run(FedAvg(lr=0.1), rounds=3, seed=7)
    assert not same(a.state_.weights, no_dropout.state_.weights)


def test_batched_loading_equals_load_state_dict_and_keeps_its_errors():
    source, target, reference = tiny_cnn(), tiny_cnn(), tiny_cnn()
    weights = {k: v + 1 for k, v in source.state_dict().items()}
    load_weights_into(target, weights)
    reference.load_state_dict(weights)
    assert same(target.state_dict(), reference.state_dict())
    wrong = dict(weights)
    wrong["head.bias"] = torch.zeros(1)  # broadcastable: a plain copy_ would accept it
    with pytest.raises(RuntimeError, match="size mismatch for head.bias"):
        load_weights_into(target, wrong)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_weights_into(target, {k: v for k, v in weights.items() if k != "head.bias"})


def test_class_counts_are_counted_once_per_split_and_follow_changed_labels():
    from fedlib.core.algorithm import _local_counts
    from fedlib.data import ArrayDataset

    data = ArrayDataset(torch.zeros(5, 1, 2, 2), torch.tensor([0, 2, 2, 1, 2]))
    counts, prior = _local_counts(data, 4)
    assert counts.tolist() == [1, 1, 3, 0]
    assert torch.equal(prior, torch.tensor([0.2, 0.2, 0.6, 0.0]))
    counts[0] = 99  # the caller's copy: the next call is unaffected
    assert _local_counts(data, 4)[0].tolist() == [1, 1, 3, 0]
    data.labels[0] = 3  # changed in place: counted again
    assert _local_counts(data, 4)[0].tolist() == [0, 1, 3, 1]
    data.labels = torch.tensor([1, 1, 1, 1, 1])  # replaced: counted again
    assert _local_counts(data, 4)[0].tolist() == [0, 5, 0, 0]
    assert _local_counts(data, 6)[0].tolist() == [0, 5, 0, 0, 0, 0]

    class NoLabels(torch.utils.data.Dataset):  # counted by reading every item, every time
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(1), i

    assert _local_counts(NoLabels(), 3)[0].tolist() == [1, 1, 0]


def test_local_training_may_not_modify_the_stored_state_in_place():
    class Counts(FedAvg):
        client_state_fields: ClassVar[dict[str, str]] = {"count": "rounds trained"}

        def after_local_training(self, model, ctx):
            if "count" in ctx.state.method:
                ctx.state.method["count"].add_(1)  # in place: refused
            else:
                ctx.state.method["count"] = torch.ones(1)

    sim = Simulation(Counts(), tiny_cnn, blobs(), num_rounds=2, progress=False)
    with pytest.raises(RuntimeError, match=r"modified the stored client state in place "
                       r"\(ClientState.method\['count'\]\)"):
        sim.run()


def test_the_working_copy_shares_tensors_but_not_containers():
    state = ClientState(personal={"a": torch.ones(1)}, method={"bank": {"x": torch.zeros(2)},
                                                              "log": [1, 2]})
    copy = working_copy(state)
    assert copy.personal["a"] is state.personal["a"]
    assert copy.method["bank"]["x"] is state.method["bank"]["x"]
    copy.method["bank"]["y"] = torch.ones(1)
    copy.method["log"].append(3)
    copy.personal["b"] = torch.ones(1)
    assert set(state.method["bank"]) == {"x"} and state.method["log"] == [1, 2]
    assert set(state.personal) == {"a"}


# ------------------------------------------------------------------ what a client keeps
def tensor_bytes(value) -> int:
    """Bytes of every tensor in a client state (or nested containers)."""
    if isinstance(value, ClientState):
        value = [value.personal, value.post_local, value.optimizer, value.method]
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(v) for v in value)
    return 0


def test_fedavg_clients_keep_only_their_counters_unless_clients_are_evaluated():
    sim = run(FedAvg(lr=0.1), rounds=2)
    counters = {k for k in sim.model_.state_dict() if k.endswith("num_batches_tracked")}
    for k in range(3):
        state = sim.client_states_[k]
        assert state.post_local is None and set(state.personal) == counters
        assert tensor_bytes(state) == 8 * len(counters)
    evaluated = run(FedAvg(lr=0.1), rounds=2, evaluate_clients=True)
    assert evaluated.client_states_[0].post_local is not None


@pytest.mark.parametrize("fraction", [1.0, 0.67])
def test_rebuilt_post_local_models_equal_the_stored_ones(fraction):
    kept = run(FedAvg(lr=0.1), rounds=4, fraction=fraction, seed=3, evaluate_clients=True)
    rebuilt = run(FedAvg(lr=0.1), rounds=4, fraction=fraction, seed=3)
    assert same(kept.state_.weights, rebuilt.state_.weights)
    for k in range(3):
        assert rebuilt.client_states_[k].post_local is None
        if kept.client_states_[k].post_local is None:  # never sampled
            assert rebuilt.post_local_weights(k) is None
            continue
        assert same(kept.client_states_[k].post_local, rebuilt.post_local_weights(k))
        assert same(dict(kept.client_model(k).state_dict()),
                    dict(rebuilt.client_model(k).state_dict()))
    # one global state per round that is still some client's last round
    last_rounds = {r for r, _, _ in rebuilt._replay.values()}
    assert set(rebuilt._round_starts) == last_rounds
    assert pd.Series(evaluate_run(kept)).equals(pd.Series(evaluate_run(rebuilt)))
    before = {k: v.clone() for k, v in rebuilt.state_.weights.items()}
    rebuilt.client_model(0)
    assert same(before, rebuilt.state_.weights)  # a replay changes nothing


def test_post_local_models_are_rebuilt_after_a_resume(tmp_path):
    kept = run(FedAvg(lr=0.1), rounds=3, fraction=0.67, seed=3, evaluate_clients=True)
    run(FedAvg(lr=0.1), rounds=2, fraction=0.67, seed=3, checkpoint_dir=tmp_path)
    resumed = Simulation(FedAvg(lr=0.1), tiny_cnn, blobs(), num_rounds=3, fraction=0.67,
                         seed=3, progress=False, checkpoint_dir=tmp_path)
    resumed.run(resume=True)
    trained = [k for k in range(3) if kept.client_states_[k].post_local is not None]
    assert trained
    for k in range(3):
        if k in trained:
            assert same(kept.client_states_[k].post_local, resumed.post_local_weights(k))
        else:
            assert resumed.post_local_weights(k) is None


def test_ditto_keeps_its_personal_model_and_nothing_else():
    sim = run(Ditto(lr=0.1), rounds=1)
    model_bytes = sum(v.numel() * v.element_size() for v in sim.model_.state_dict().values())
    counters = 8 * sum(1 for k in sim.model_.state_dict() if k.endswith("num_batches_tracked"))
    for k in range(3):
        assert tensor_bytes(sim.client_states_[k]) == model_bytes + counters


# ------------------------------------------------------------------ compact history
def test_record_table_gives_back_the_rows_it_was_given():
    rows = [
        {"round": 1, "client": 0, "train_loss": 0.5},
        {"round": 1, "client": 1, "train_loss": float("nan"), "gen_accuracy": 0.25},
        {"round": 2, "client": 0, "note": "x", "flag": True, "big": 2**70},
        {"round": 2, "client": 1, "train_loss": 1, "gen_accuracy": np.float64(0.5)},
    ]
    table = RecordTable(rows)
    assert len(table) == 4
    back = list(table)
    for got, want in zip(back, rows, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == value or (np.isnan(got[key]) and np.isnan(value))
    assert type(back[3]["gen_accuracy"]) is float and type(back[0]["round"]) is int
    assert type(back[2]["flag"]) is bool and back[2]["big"] == 2**70
    assert type(back[3]["train_loss"]) is int  # the column became mixed: values kept as given
    assert table[-1] == back[3]
    pd.testing.assert_frame_equal(pd.DataFrame(list(table)), pd.DataFrame(rows))
    assert table._columns["round"].kind == "int"
    assert table._columns["gen_accuracy"].kind == "float"
    with pytest.raises(IndexError):
        table[4]


def test_the_simulation_history_is_a_record_table_with_the_same_frame():
    sim = run(FedAvg(lr=0.1), rounds=2, evaluate_clients=True)
    assert isinstance(sim.history_.client_records, RecordTable)
    pd.testing.assert_frame_equal(sim.history_.clients,
                                  pd.DataFrame(list(sim.history_.client_records)))
    assert set(sim.history_.clients.columns) >= {"round", "client", "train_loss",
                                                 "gen_accuracy", "spec_accuracy"}


# ------------------------------------------------------------------ states on disk
def test_client_states_on_disk_give_the_same_run(tmp_path):
    settings = dict(rounds=3, fraction=0.67, seed=1)
    memory = run(FedPer(lr=0.1), **settings)
    disk = run(FedPer(lr=0.1), client_state_dir=tmp_path / "states", **settings)
    assert isinstance(disk.client_states_, DiskClientStates)
    assert same(memory.state_.weights, disk.state_.weights)
    for k in range(3):
        assert same(memory.client_states_[k].personal, disk.client_states_[k].personal)
    assert history(memory)[0].equals(history(disk)[0])
    assert sorted(p.name for p in (tmp_path / "states").iterdir()) == [
        f"client_{k}.pt" for k in range(3)]


def test_an_aborted_round_leaves_the_states_on_disk_as_they_were(tmp_path):
    class FailsInRoundTwo(Ditto):
        def before_local_training(self, model, ctx):
            if (ctx.client_id, ctx.round) == (2, 1):
                raise RuntimeError("disk full")
            super().before_local_training(model, ctx)

    sim = Simulation(FailsInRoundTwo(lr=0.1), tiny_cnn, blobs(), num_rounds=1, progress=False,
                     client_state_dir=tmp_path)
    sim.run()
    before = {k: sim.client_states_[k].method["personal_model"] for k in range(3)}
    sim.num_rounds = 2
    with pytest.raises(RuntimeError, match="client 2 failed in round 2: disk full"):
        sim.run()
    for k in range(3):
        assert same(sim.client_states_[k].method["personal_model"], before[k])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"client_{k}.pt" for k in range(3)]


def test_disk_states_read_back_and_start_empty(tmp_path):
    (tmp_path / "client_0.pt").write_bytes(b"stale")
    store = DiskClientStates(tmp_path, [0, 1])
    assert not (tmp_path / "client_0.pt").exists()
    assert store[1] == ClientState()
    store[1] = ClientState(personal={"w": torch.arange(3)}, method={"m": torch.ones(2)})
    assert torch.equal(store[1].personal["w"], torch.arange(3))
    store.stage(1, ClientState(personal={"w": torch.zeros(1)}))
    assert torch.equal(store[1].personal["w"], torch.arange(3))  # not committed yet
    store.commit_staged()
    assert torch.equal(store[1].personal["w"], torch.zeros(1))
    store.stage(0, ClientState(personal={"w": torch.ones(1)}))
    store.discard_staged()
    assert store[0] == ClientState() and not (tmp_path / "client_0.pt.staged").exists()
    assert list(store) == [0, 1] and len(store) == 2
    with pytest.raises(KeyError, match="unknown client 5"):
        store[5] = ClientState()
    del store[1]
    assert store[1] == ClientState()


def test_the_algorithm_is_told_not_to_keep_post_local_models():
    sim = Simulation(FedAvg(lr=0.1), tiny_cnn, blobs(), num_rounds=1, progress=False)
    message = sim.algorithm.message_for(sim.state_, 0)
    common = dict(client_id=0, num_classes=3, initial_weights=sim.initial_weights_,
                  device=torch.device("cpu"))
    _, kept = sim.algorithm.client_update(
        sim.model_, message, ClientState(), sim.dataset.train[0],
        generator=torch.Generator().manual_seed(0), **common)
    _, dropped = sim.algorithm.client_update(
        sim.model_, message, ClientState(), sim.dataset.train[0],
        generator=torch.Generator().manual_seed(0), keep_post_local=False, **common)
    assert kept.post_local is not None and dropped.post_local is None
    assert same(kept.personal, dropped.personal)


def test_aggregate_accepts_streamed_replies():
    state = GlobalState(weights={"w": torch.zeros(1), "other": torch.ones(1)},
                        extra={"shared_keys": ["w"]})
    replies = StreamedReplies([ClientReply(0, {}, 2)], {"w": torch.tensor([3.0])})
    new = FedAvg().aggregate(state, replies)
    assert torch.equal(new.weights["w"], torch.tensor([3.0]))
    assert torch.equal(new.weights["other"], torch.ones(1))


def test_the_seeds_of_a_round_are_derived_together_exactly():
    from fedlib.core.simulation import derive_seeds

    clients = [0, 1, 2, 77, 4095, 2**32 - 1]
    for prefix in [(0, 0), (3, 12), (2**31, 7), (5,), (1, 2, 3)]:
        assert derive_seeds(prefix, clients) == [derive_seed(*prefix, c) for c in clients]
    assert derive_seeds((2**40, 1), [3]) == [derive_seed(2**40, 1, 3)]  # one-by-one path
    assert derive_seeds((0, 1), []) == []
