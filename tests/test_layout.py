"""The model layout the local rounds reuse (``fedlib.core.layout``): it equals a fresh
``state_dict(keep_vars=True)`` walk after every kind of change to a model's structure, and it
does not keep the model alive."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn
from toy_federation import tiny_cnn

from fedlib.core.algorithm import move_to
from fedlib.core.layout import model_layout


def matches_a_fresh_walk(model: nn.Module) -> bool:
    layout = model_layout(model)
    fresh = model.state_dict(keep_vars=True)
    return (
        list(layout.tensors) == list(fresh)
        and all(layout.tensors[k] is v for k, v in fresh.items())
        and list(layout.modules(model)) == list(model.modules())
    )


def test_the_layout_is_reused_while_the_structure_holds():
    model = tiny_cnn()
    first = model_layout(model)
    with torch.no_grad():
        next(model.parameters()).add_(1)  # values change, structure does not
    model.train(False)
    assert model_layout(model) is first and matches_a_fresh_walk(model)
    with pytest.raises(TypeError):
        first.tensors["new"] = torch.zeros(1)  # read-only: callers cannot corrupt it


def replace_parameter(model):
    model.head.weight = nn.Parameter(model.head.weight.detach().clone())


def replace_buffer(model):
    norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    norm.running_mean = torch.zeros_like(norm.running_mean)


def delete_submodule(model):
    del model.head


def add_submodule(model):
    model.extra = nn.Linear(2, 2)


def add_buffer_directly(model):
    model.head.register_buffer("scale", torch.ones(1))


def change_dtype(model):
    model.double()


def add_state_dict_hook(model):
    model.head.register_state_dict_post_hook(lambda module, state, prefix, local: None)


def drop_parameter(model):
    model.head.bias = None


@pytest.mark.parametrize("change", [
    replace_parameter, replace_buffer, delete_submodule, add_submodule, add_buffer_directly,
    change_dtype, add_state_dict_hook, drop_parameter,
])
def test_the_layout_is_walked_again_after_a_structural_change(change):
    model = tiny_cnn()
    first = model_layout(model)
    assert matches_a_fresh_walk(model)
    change(model)
    assert model_layout(model) is not first
    assert matches_a_fresh_walk(model)


def test_a_model_that_writes_its_own_state_dict_is_walked_every_time():
    class Renames(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def state_dict(self, *args, **kwargs):
            return super().state_dict(*args, **kwargs)

    model = Renames()
    assert model_layout(model) is not model_layout(model)
    assert matches_a_fresh_walk(model)


def test_the_layout_does_not_keep_the_model_alive():
    model = tiny_cnn()
    move_to(model, torch.device("cpu"))
    model_layout(model)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
