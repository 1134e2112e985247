"""A model's state tensors and modules, found once and reused while its structure is unchanged.

Every local round reads the scratch model's ``state_dict(keep_vars=True)`` (to load the
received weights and to copy out the trained ones) and its list of modules (train mode,
loading hooks). Walking the module tree builds new dictionaries and prefixed key strings each
time; on a model of small clients that walk costs as much as a tenth of the client's training
step, since the training that ran in between has pushed it out of the processor's caches.
:func:`model_layout` walks once per model and keeps the result while the structure holds.

The structure holds while no parameter, buffer or submodule was registered anywhere since the
walk (torch's global registration hooks count every ``register_*`` and attribute
assignment), every parameter and buffer found is still the object its module
holds under its name (a ``model.to(dtype)`` replaces buffers, ``del module.weight`` removes
one), every module still has as many submodules (``del model.head``), and no module has gained
a state-dict hook. Anything else re-walks.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import nn
from torch.nn.modules import module as _module

__all__ = ["ModelLayout", "model_layout"]

_changes = [0]  # parameters, buffers and submodules registered in this process so far


def _count_change(*_args) -> None:
    _changes[0] += 1


_module.register_module_parameter_registration_hook(_count_change)
_module.register_module_buffer_registration_hook(_count_change)
_module.register_module_module_registration_hook(_count_change)


class ModelLayout:
    """``tensors``: ``model.state_dict(keep_vars=True)`` (read-only); :meth:`modules`:
    ``tuple(model.modules())`` (see the module notes for when a layout is reused).

    A layout holds no reference to the model itself (it is kept in a weak dictionary keyed by
    the model), only to its submodules, its tensors and its registries."""

    __slots__ = ("_children", "_held", "_hooks", "_submodules", "_version", "reusable", "tensors")

    def __init__(self, model: nn.Module):
        self._version = _changes[0]
        self.tensors: Mapping[str, torch.Tensor] = MappingProxyType(
            model.state_dict(keep_vars=True)
        )
        modules = tuple(model.modules())
        self._submodules = modules[1:]
        self._held = tuple(
            (owner, name, tensor)
            for module in modules
            for owner in (module._parameters, module._buffers)
            for name, tensor in owner.items()
        )
        self._children = tuple((m._modules, len(m._modules)) for m in modules)
        self._hooks = tuple(
            hooks for m in modules for hooks in (m._state_dict_hooks, m._state_dict_pre_hooks)
        )
        self.reusable = all(
            type(m).state_dict is nn.Module.state_dict
            and type(m)._save_to_state_dict is nn.Module._save_to_state_dict
            for m in modules
        )

    def modules(self, model: nn.Module) -> tuple[nn.Module, ...]:
        """``tuple(model.modules())`` for the model this layout was walked from."""
        return (model, *self._submodules)

    def holds(self) -> bool:
        """Whether the model still has the structure this layout was walked from."""
        return (
            self._version == _changes[0]
            and all(owner.get(name) is tensor for owner, name, tensor in self._held)
            and all(len(children) == n for children, n in self._children)
            and not any(self._hooks)
        )


_LAYOUTS: weakref.WeakKeyDictionary[nn.Module, ModelLayout] = weakref.WeakKeyDictionary()


def model_layout(model: nn.Module) -> ModelLayout:
    """``model``'s :class:`ModelLayout`: the kept one while it holds, else a new walk (kept
    unless a module writes its own state dict, whose result the structure cannot vouch for)."""
    layout = _LAYOUTS.get(model)
    if layout is not None and layout.reusable and layout.holds():
        return layout
    layout = ModelLayout(model)
    _LAYOUTS[model] = layout
    return layout
