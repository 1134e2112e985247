"""``Simulation(..., vectorize=True)``: the clients of a round trained together equal the
sequential path within the stated tolerance (every weight within atol 1e-5, rtol 1e-4 after
three rounds), the folded layers compute each client's own layer, and what the path cannot
train exactly is refused with a message."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from toy_federation import blobs, tiny_cnn

import fedlib.core.vectorized as vectorized
from fedlib.core import Simulation
from fedlib.core.vectorized import fold_inputs, fold_model
from fedlib.data import ArrayDataset, FederatedDataset
from fedlib.methods import MOON, Ditto, FedAvg, FedLC, FedPer, FedProx, LocalOnly
from fedlib.models import SmallCNN

TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def pair(method, *, data=None, model_fn=tiny_cnn, **kwargs) -> tuple[Simulation, Simulation]:
    """The same run, sequential then vectorized (warnings are errors: no silent fallback)."""
    out = []
    for vectorize in (False, True):
        sim = Simulation(method, model_fn, data or blobs(num_clients=5, per_client=20),
                         num_rounds=3, progress=False, vectorize=vectorize, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sim.run()
        out.append(sim)
    return out[0], out[1]


def assert_close_runs(a: Simulation, b: Simulation) -> None:
    for key, value in a.state_.weights.items():
        torch.testing.assert_close(b.state_.weights[key], value, **TOLERANCE)
    for k in a.client_states_:
        sa, sb = a.client_states_[k], b.client_states_[k]
        assert sa.personal.keys() == sb.personal.keys()
        for key, value in sa.personal.items():
            if value.is_floating_point():
                torch.testing.assert_close(sb.personal[key], value, **TOLERANCE)
            else:  # BatchNorm step counters: exactly the sequential ones
                assert torch.equal(sb.personal[key], value)
    ra, rb = a.history_.rounds, b.history_.rounds
    assert list(ra["num_clients"]) == list(rb["num_clients"])
    torch.testing.assert_close(torch.tensor(rb["train_loss"].to_numpy()),
                               torch.tensor(ra["train_loss"].to_numpy()), **TOLERANCE)


@pytest.mark.parametrize(
    "method",
    [
        FedAvg(lr=0.1, batch_size=8),  # 20 examples: batches of 8, 8, 4 (ragged last batch)
        FedProx(lr=0.1, mu=0.5, batch_size=8),
        FedPer(lr=0.1, batch_size=10, weight_decay=1e-3),
        LocalOnly(lr=0.1, batch_size=8, max_grad_norm=0.5),
        FedAvg(lr=0.1, batch_size=8, local_steps=5, momentum=0.0),
    ],
    ids=["fedavg", "fedprox", "fedper", "local", "fedavg-steps"],
)
def test_vectorized_equals_sequential(method):
    a, b = pair(method, fraction=0.8, evaluate_clients=True)
    assert_close_runs(a, b)


def test_clients_of_different_sizes_are_masked():
    """Sizes 5, 12 and 23 with batch 4: 2, 3 and 6 steps; shorter clients stop early."""
    g = torch.Generator().manual_seed(1)
    sizes = (5, 12, 23)
    train = {k: ArrayDataset(torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 3)
             for k, n in enumerate(sizes)}
    test = {k: ArrayDataset(torch.rand(4, 3, 8, 8, generator=g), torch.arange(4) % 3)
            for k in range(3)}
    data = FederatedDataset("sizes", train, test, class_names=("a", "b", "c"))
    a, b = pair(FedAvg(lr=0.1, batch_size=4), data=data)
    assert_close_runs(a, b)
    assert int(b.client_states_[2].personal["body.1.num_batches_tracked"]) == 3 * 6


def test_a_failing_client_is_skipped_from_the_chunk():
    class Poisoned(FedAvg):
        """Client 1's data holds a NaN image: its update is not finite."""

    data = blobs(num_clients=4)
    data.train[1].images[0, 0, 0, 0] = float("nan")
    runs = []
    for vectorize in (False, True):
        sim = Simulation(Poisoned(lr=0.1, batch_size=8), tiny_cnn, data, num_rounds=2,
                         progress=False, vectorize=vectorize, on_client_error="skip")
        with pytest.warns(UserWarning, match="client 1 failed in round"):
            sim.run()
        runs.append(sim)
    assert list(runs[1].history_.rounds["num_clients"]) == [3, 3]
    for key, value in runs[0].state_.weights.items():
        torch.testing.assert_close(runs[1].state_.weights[key], value, **TOLERANCE)


def test_a_chunk_that_cannot_train_together_is_trained_one_by_one(monkeypatch):
    """A chunk whose joint training raises is retrained client by client on the sequential
    path, with a warning: the run equals the sequential run bit for bit."""
    from fedlib.core import vectorized

    def fails(self, clients):
        raise RuntimeError("no joint training today")

    monkeypatch.setattr(vectorized._Vectorizer, "train", fails)
    data = blobs(num_clients=4)
    runs = []
    for vectorize in (False, True):
        sim = Simulation(FedAvg(lr=0.1, batch_size=8), tiny_cnn, data, num_rounds=2,
                         progress=False, vectorize=vectorize)
        if vectorize:
            with pytest.warns(UserWarning, match="together failed .*trained one by one"):
                sim.run()
        else:
            sim.run()
        runs.append(sim)
    for key, value in runs[0].state_.weights.items():
        assert torch.equal(runs[1].state_.weights[key], value)


def test_group_norm_models_are_folded():
    a, b = pair(FedAvg(lr=0.1, batch_size=8), model_fn=lambda: SmallCNN(3, 3, width=4,
                                                                          norm="group"))
    assert_close_runs(a, b)


def test_chunks_are_sized_by_the_batch_the_clients_draw(monkeypatch):
    """A chunk holds about ``CHUNK_ELEMENTS`` input values per step, ``K * B * 192`` for 8x8
    RGB images, ``B`` the smaller of the batch size and the largest client (at most 64
    clients). With a budget of 2 * 20 * 192 values: clients of 20 images in batches of 32 draw
    batches of 20, 2 per chunk; clients of 10, 4 per chunk; batches of 5, 8 per chunk."""

    def chunk(method, per_client: int, budget: int) -> int:
        monkeypatch.setattr(vectorized, "CHUNK_ELEMENTS", budget)
        sim = Simulation(method, tiny_cnn, blobs(num_clients=4, per_client=per_client),
                         num_rounds=1, progress=False, vectorize=True)
        sim.run()
        return sim._vectorizer.chunk

    assert chunk(FedAvg(lr=0.1, batch_size=32), 20, 640_000) == 64
    assert chunk(FedAvg(lr=0.1, batch_size=32), 20, 2 * 192 * 20) == 2  # batches of 20
    assert chunk(FedAvg(lr=0.1, batch_size=32), 10, 2 * 192 * 20) == 4  # batches of 10
    assert chunk(FedAvg(lr=0.1, batch_size=5), 20, 2 * 192 * 20) == 8  # batches of 5


def test_vectorized_runs_are_reproducible_and_resume_bit_exactly(tmp_path):
    method = FedAvg(lr=0.1, batch_size=8)
    common = dict(progress=False, vectorize=True, seed=2)
    whole = Simulation(method, tiny_cnn, blobs(), num_rounds=3, **common)
    whole.run()
    again = Simulation(method, tiny_cnn, blobs(), num_rounds=3, **common)
    again.run()
    Simulation(method, tiny_cnn, blobs(), num_rounds=2, checkpoint_dir=tmp_path, **common).run()
    resumed = Simulation(method, tiny_cnn, blobs(), num_rounds=3, checkpoint_dir=tmp_path,
                         **common)
    resumed.run(resume=True)
    for key, value in whole.state_.weights.items():
        assert torch.equal(again.state_.weights[key], value)
        assert torch.equal(resumed.state_.weights[key], value)
    assert whole.describe()["vectorize"] is True
    assert "vectorize" not in Simulation(method, tiny_cnn, blobs(), num_rounds=1).describe()


def test_the_global_generator_is_left_as_the_sequential_path_leaves_it():
    a, b = pair(FedAvg(lr=0.1, batch_size=8))
    with torch.random.fork_rng(devices=[]):
        a._seed_global(0)
        a._play_round(a.state_.round)
        after_sequential = torch.rand(3)
        b._seed_global(0)
        b._play_round(b.state_.round)
        after_vectorized = torch.rand(3)
    assert torch.equal(after_sequential, after_vectorized)


# ------------------------------------------------------------------ folded layers
def test_folded_inputs_put_clients_side_by_side():
    x0 = torch.zeros(2, 1, 2, 2)
    x1 = torch.ones(2, 1, 2, 2)
    folded = fold_inputs([x0, x1])
    assert folded.shape == (2, 2, 2, 2)
    assert torch.equal(folded[:, 0], x0[:, 0]) and torch.equal(folded[:, 1], x1[:, 0])
    assert folded.is_contiguous(memory_format=torch.channels_last)
    flat = fold_inputs([torch.zeros(3, 2), torch.ones(3, 2)])
    assert flat.tolist() == [[0.0, 0.0, 1.0, 1.0]] * 3


def test_a_folded_linear_layer_is_each_clients_own_layer():
    """Client 0: W = I, b = 0; client 1: W = 2I, b = 1; input (1, 2) for both:
    outputs (1, 2) and (3, 5)."""
    layer = nn.Linear(2, 2)
    folded = fold_model(nn.Sequential(layer))
    weights = {"0.weight": torch.stack([torch.eye(2), 2 * torch.eye(2)]),
               "0.bias": torch.tensor([[0.0, 0.0], [1.0, 1.0]])}
    x = fold_inputs([torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]])])
    out = torch.func.functional_call(folded, weights, (x,))
    assert out.tolist() == [[1.0, 2.0, 3.0, 5.0]]


def test_pool_before_relu_keeps_values_and_gradients_bit_for_bit():
    """The folded model pools before its ReLU: windows with ties, an all-negative window, a
    zero maximum and a positive maximum give the same outputs and gradients, bit for bit."""
    x = torch.tensor([[[[1.0, 1.0, -2.0, -3.0],
                        [0.5, 1.0, -1.0, -2.0],
                        [0.0, -1.0, 2.0, 3.0],
                        [0.0, 0.0, 3.0, 1.0]]]])
    x = torch.cat([x, torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))], 1)
    model = nn.Sequential(nn.ReLU(inplace=True), nn.MaxPool2d(2))
    folded = fold_model(model)
    assert [type(m) for m in folded] == [nn.MaxPool2d, nn.ReLU]
    assert [type(m) for m in model] == [nn.ReLU, nn.MaxPool2d]  # the model itself is unchanged
    grad = torch.arange(1.0, 9.0).view(1, 2, 2, 2)
    results = []
    for net in (model, folded):
        leaf = x.clone().requires_grad_(True)
        out = net(leaf.clone())
        out.backward(grad)
        results.append((out.detach(), leaf.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


# ------------------------------------------------------------------ refusals
class MixesChannels(nn.Module):
    """A conv net whose forward averages over channels: the clients would mix."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(1, 3)

    def forward(self, x):
        return self.head(self.conv(x).mean((1, 2, 3)).unsqueeze(1))


class OwnLoss(FedAvg):
    def local_loss(self, model, batch, ctx):
        return 2 * super().local_loss(model, batch, ctx)


class WithLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.norm = nn.LayerNorm(192)
        self.head = nn.Linear(192, 3)

    def forward(self, x):
        return self.head(self.norm(self.flat(x)))


class TiedHead(nn.Module):
    """Two linear layers sharing one weight matrix."""

    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.first = nn.Linear(192, 192, bias=False)
        self.second = nn.Linear(192, 192, bias=False)
        self.second.weight = self.first.weight
        self.head = nn.Linear(192, 3)

    def forward(self, x):
        return self.head(self.second(self.first(self.flat(x))))


@pytest.mark.parametrize(
    ("method", "model_fn", "match"),
    [
        (Ditto(), tiny_cnn, r"Ditto overrides the client hooks \['train_locally'\]"),
        (MOON(), tiny_cnn, r"MOON overrides the client hooks \['before_local_training'\]"),
        (FedLC(), tiny_cnn, r"FedLC overrides the client hooks \['before_local_training'\]"),
        (OwnLoss(), tiny_cnn, "OwnLoss overrides 'local_loss'"),
        (FedAvg(optimizer="adam"), tiny_cnn, "optimizer='adam'"),
        (FedAvg(optimizer_state="persist"), tiny_cnn, "optimizer_state='persist'"),
        (FedAvg(), lambda: SmallCNN(3, 3, width=2, dropout=0.2), "is a dropout"),
        (FedAvg(), MixesChannels, "mixes the clients' channels"),
        (FedAvg(), WithLayerNorm, r"'norm' \(LayerNorm\) holds tensors"),
        (FedAvg(), TiedHead, r"'first.weight' and 'second.weight' are one tensor"),
    ],
    ids=["ditto", "moon", "fedlc", "own-loss", "adam", "persist", "dropout", "mixing", "layernorm",
         "tied"],
)
def test_what_cannot_be_vectorized_exactly_is_refused(method, model_fn, match):
    with pytest.raises(ValueError, match="'vectorize=True' cannot train this run exactly: .*"
                       + match):
        Simulation(method, model_fn, blobs(), num_rounds=1, progress=False, vectorize=True)


def test_batchnorm_without_momentum_and_datasets_without_tensors_are_refused():
    def cumulative_bn():
        model = tiny_cnn()
        model.body[1].momentum = None
        return model

    with pytest.raises(ValueError, match="BatchNorm with momentum=None"):
        Simulation(FedAvg(), cumulative_bn, blobs(), num_rounds=1, vectorize=True)
    data = blobs()
    data.train[0] = torch.utils.data.TensorDataset(data.train[0].images, data.train[0].labels)
    with pytest.raises(ValueError, match="without 'images' and 'labels' tensors"):
        Simulation(FedAvg(), tiny_cnn, data, num_rounds=1, vectorize=True)
    with pytest.raises(TypeError, match="Simulation: 'vectorize' must be an instance of bool"):
        Simulation(FedAvg(), tiny_cnn, blobs(), num_rounds=1, vectorize="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vectorized_equals_sequential_on_cuda():
    a, b = pair(FedProx(lr=0.1, mu=0.5, batch_size=8), device="cuda")
    assert_close_runs(a, b)
