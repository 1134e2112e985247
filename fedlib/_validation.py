"""Parameter validation with messages that name the owner, the parameter, what is allowed and
the value received (in the manner of scikit-learn's ``_param_validation``).

A class declares its constraints as data::

    _constraints = {"mu": Interval(float, 0, None, closed="left")}

and calls ``validate_params(self, {"mu": self.mu})`` (or uses :class:`Validated`) as it starts.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable, Mapping
from typing import Any


class Constraint:
    """One rule a parameter value must satisfy."""

    def is_satisfied_by(self, value: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


class Interval(Constraint):
    """A number of type ``kind`` (``int`` or ``float``) in an interval.

    ``closed`` is one of "left", "right", "both", "neither"; ``None`` bounds are open-ended.
    """

    def __init__(self, kind: type, low: float | None, high: float | None, *, closed: str = "both"):
        if kind not in (int, float):
            raise TypeError(f"Interval: 'kind' must be int or float, got {kind!r}.")
        if closed not in ("left", "right", "both", "neither"):
            raise ValueError(
                "Interval: 'closed' must be one of 'left', 'right', 'both', 'neither', "
                f"got {closed!r}."
            )
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if self.kind is float and not isinstance(value, numbers.Real):
            return False
        if value != value:  # NaN
            return False
        left_ok = self.low is None or (
            value >= self.low if self.closed in ("left", "both") else value > self.low
        )
        right_ok = self.high is None or (
            value <= self.high if self.closed in ("right", "both") else value < self.high
        )
        return bool(left_ok and right_ok)

    def describe(self) -> str:
        name = "an int" if self.kind is int else "a float"
        parts = []
        if self.low is not None:
            parts.append((">= " if self.closed in ("left", "both") else "> ") + f"{self.low:g}")
        if self.high is not None:
            parts.append(("<= " if self.closed in ("right", "both") else "< ") + f"{self.high:g}")
        return name + (" " + " and ".join(parts) if parts else "")


class Options(Constraint):
    """One of a fixed set of values (usually strings)."""

    def __init__(self, options: Iterable[Any]):
        self.options = tuple(options)

    def is_satisfied_by(self, value: Any) -> bool:
        return any(value == o and type(value) is type(o) for o in self.options)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


class InstanceOf(Constraint):
    """An instance of one of the given types (``None`` allowed if listed as ``type(None)``)."""

    def __init__(self, *types: type, description: str | None = None):
        self.types = types
        self.description = description

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.types)

    def describe(self) -> str:
        if self.description:
            return self.description
        names = ["None" if t is type(None) else t.__name__ for t in self.types]
        return "an instance of " + " or ".join(names)


class AnyOf(Constraint):
    """Satisfied when any of several constraints is (e.g. ``None`` or a positive int)."""

    def __init__(self, *constraints: Constraint):
        self.constraints = constraints

    def is_satisfied_by(self, value: Any) -> bool:
        return any(c.is_satisfied_by(value) for c in self.constraints)

    def describe(self) -> str:
        return " or ".join(c.describe() for c in self.constraints)


NONE = InstanceOf(type(None), description="None")


def check_param(owner: str, name: str, value: Any, constraint: Constraint) -> None:
    """Raise ``ValueError`` (wrong value) or ``TypeError`` (wrong type) unless satisfied.

    >>> check_param("FedProx", "mu", -0.5, Interval(float, 0, None, closed="left"))
    Traceback (most recent call last):
    ...
    ValueError: FedProx: 'mu' must be a float >= 0, got -0.5.
    """
    if constraint.is_satisfied_by(value):
        return
    message = f"{owner}: {name!r} must be {constraint.describe()}, got {value!r}."
    wrong_type = isinstance(constraint, InstanceOf) or (
        isinstance(constraint, Interval)
        and (isinstance(value, bool) or not isinstance(value, numbers.Real))
    )
    raise (TypeError if wrong_type else ValueError)(message)


def validate_params(owner: str, params: Mapping[str, Any], constraints: Mapping[str, Constraint]):
    """Check every parameter that has a constraint."""
    for name, constraint in constraints.items():
        if name in params:
            check_param(owner, name, params[name], constraint)


def collect_constraints(cls: type) -> dict[str, Constraint]:
    """Merge ``_constraints`` along the MRO (subclasses override their parents)."""
    merged: dict[str, Constraint] = {}
    for klass in reversed(cls.__mro__):
        merged.update(getattr(klass, "_constraints", {}) or {})
    return merged


class Validated:
    """Mixin for dataclasses: validates every field against the merged ``_constraints``."""

    _constraints: dict[str, Constraint] = {}

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        validate_params(type(self).__name__, values, collect_constraints(type(self)))
        self._check_consistency()

    def _check_consistency(self) -> None:
        """Cross-parameter checks; subclasses override and name both parameters."""
