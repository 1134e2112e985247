"""Client states packed into one buffer per dtype (fedlib.core.storage.PackedState): what comes
back is what went in, states of one structure share their layout, the in-memory store stages
and commits as the disk store does, and a simulation keeps its states packed."""

from __future__ import annotations

import gc
from collections import OrderedDict

import numpy as np
import pytest
import torch
from toy_federation import blobs, tiny_cnn

from fedlib.core import Simulation
from fedlib.core.protocol import ClientState
from fedlib.core.storage import ALIGNMENT, PackedClientStates, PackedState
from fedlib.methods import Ditto, FedAvg


def identical(a, b) -> bool:
    """Equal values, types, dtypes, shapes and strides, through nested containers."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return (a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
                and a.requires_grad == b.requires_grad and torch.equal(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, float):
        return a.hex() == b.hex()
    return a == b


def a_state(scale: float = 1.0, *, odd: bool = False) -> ClientState:
    """Every kind of entry a state may hold; ``odd`` adds a tensor that is not packed (a
    transposed view), which makes the layout the state's own."""
    shared = torch.arange(6.0).reshape(2, 3) * scale
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return ClientState(
        personal={"w": shared, "count": torch.tensor(7), "flag": torch.tensor([True, False])},
        post_local=OrderedDict(w=torch.full((2, 3), scale), b=torch.zeros(0)),
        optimizer=optimizer.state_dict(),
        method={
            "same": shared,  # held twice: packed once, given back as one tensor
            "double": torch.ones(3, dtype=torch.float64) * scale,
            "nested": [(1, 2.5, "x", None), {"k": torch.tensor([scale])}],
            **({"transposed": torch.arange(6.0).reshape(2, 3).t()} if odd else {}),
        },
    )


def test_a_packed_state_gives_back_what_it_was_given():
    state = a_state(odd=True)
    back = PackedState.pack(state).unpack()
    for name in ("personal", "post_local", "optimizer", "method"):
        assert identical(getattr(state, name), getattr(back, name)), name
    assert back.method["same"] is back.personal["w"]
    assert back.method["transposed"] is state.method["transposed"]  # not contiguous: as is
    assert PackedState.pack(a_state(odd=True)).layout is not PackedState.pack(state).layout


def test_a_packed_state_is_a_copy_in_one_buffer_per_dtype():
    state = a_state()
    packed = PackedState.pack(state)
    state.personal["w"].add_(1)  # the packed copy does not move
    assert torch.equal(packed.unpack().personal["w"], torch.arange(6.0).reshape(2, 3))
    dtypes = {b.dtype for b in packed.buffers}
    assert dtypes == {torch.uint8} and len(packed.buffers) == 4  # float32, int64, bool, float64
    assert packed.nbytes == sum(len(b) for b in packed.buffers)
    assert all(len(b) % ALIGNMENT == 0 for b in packed.buffers)
    back = packed.unpack()
    for tensor in [*back.personal.values(), *back.post_local.values()]:
        assert tensor.data_ptr() % ALIGNMENT == 0  # as a freshly allocated tensor lies


def test_states_of_one_structure_share_their_layout_and_keep_their_own_values():
    one, two = PackedState.pack(a_state(1.0)), PackedState.pack(a_state(2.0))
    assert one.layout is two.layout
    assert torch.equal(two.unpack().method["double"], torch.full((3,), 2.0, dtype=torch.float64))
    # plain values are part of the layout, compared by type and bits (-0.0 is not 0.0)
    zero, signed = a_state(), a_state()
    zero.optimizer["param_groups"][0]["weight_decay"] = 0.0
    signed.optimizer["param_groups"][0]["weight_decay"] = -0.0
    zero, signed = PackedState.pack(zero), PackedState.pack(signed)
    assert zero.layout is not signed.layout
    for packed, value in ((zero, 0.0), (signed, -0.0)):
        assert packed.unpack().optimizer["param_groups"][0]["weight_decay"].hex() == value.hex()
    other = a_state()
    other.method["nested"][0] = (1, 2.5, "x", 0)  # None -> 0: another layout
    assert PackedState.pack(other).layout is not one.layout


def test_layouts_are_released_with_their_states():
    state = a_state()
    state.method["unique"] = torch.zeros(12345)
    packed = PackedState.pack(state)
    layout = __import__("weakref").ref(packed.layout)
    del packed
    gc.collect()
    assert layout() is None


def test_an_unpacked_state_saves_and_loads_weights_only(tmp_path):
    state = ClientState(personal={"w": torch.ones(2, 2), "n": torch.tensor(3)},
                        method={"m": torch.arange(4.0)})
    back = PackedState.pack(state).unpack()
    torch.save(back.to_payload(), tmp_path / "s.pt")
    loaded = ClientState.from_payload(torch.load(tmp_path / "s.pt", weights_only=True))
    assert identical(loaded.personal, state.personal) and identical(loaded.method, state.method)


def test_the_memory_store_stages_and_commits_like_the_disk_store():
    store = PackedClientStates([0, 1])
    assert store[1] == ClientState()
    store[1] = ClientState(personal={"w": torch.arange(3)})
    assert torch.equal(store[1].personal["w"], torch.arange(3))
    read = store[1]
    read.personal["w"] = torch.zeros(3)  # a read state is a new object: the store is unchanged
    assert torch.equal(store[1].personal["w"], torch.arange(3))
    store.stage(1, ClientState(personal={"w": torch.zeros(1)}))
    assert torch.equal(store[1].personal["w"], torch.arange(3))  # not committed yet
    store.commit_staged()
    assert torch.equal(store[1].personal["w"], torch.zeros(1))
    store.stage(0, ClientState(personal={"w": torch.ones(1)}))
    store.discard_staged()
    assert store[0] == ClientState()
    assert list(store) == [0, 1] and len(store) == 2 and 1 in store and 5 not in store
    with pytest.raises(KeyError, match="unknown client 5"):
        store[5] = ClientState()
    with pytest.raises(KeyError, match="unknown client 5"):
        store.stage(5, ClientState())
    assert store.packed(1) is store.packed(1)  # the stored buffers themselves, no copy
    assert store.packed(0).unpack() == ClientState()
    del store[1]
    assert store[1] == ClientState()


def test_a_simulation_keeps_its_states_packed():
    sim = Simulation(Ditto(lr=0.1), tiny_cnn, blobs(), num_rounds=2, progress=False)
    sim.run()
    assert isinstance(sim.client_states_, PackedClientStates)
    model_bytes = sum(v.numel() * v.element_size() for v in sim.model_.state_dict().values())
    tensors = len(sim.model_.state_dict()) + 3  # the personal model and the three counters
    for k in range(3):
        packed = sim.client_states_._stored[k]
        assert len(packed.buffers) == 2  # float32 weights, int64 counters
        assert model_bytes + 24 <= packed.nbytes < model_bytes + 24 + ALIGNMENT * tensors


def test_an_aborted_round_leaves_the_packed_states_as_they_were():
    class FailsInRoundTwo(FedAvg):
        def before_local_training(self, model, ctx):
            if (ctx.client_id, ctx.round) == (2, 1):
                raise RuntimeError("broken")
            super().before_local_training(model, ctx)

    sim = Simulation(FailsInRoundTwo(lr=0.1), tiny_cnn, blobs(), num_rounds=1, progress=False,
                     evaluate_clients=True)
    sim.run()
    before = {k: sim.client_states_[k].post_local for k in range(3)}
    sim.num_rounds = 2
    with pytest.raises(RuntimeError, match="client 2 failed in round 2: broken"):
        sim.run()
    for k in range(3):
        after = sim.client_states_[k].post_local
        assert all(torch.equal(before[k][n], after[n]) for n in before[k])
    assert not sim.client_states_._staged
