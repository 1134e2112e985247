"""Federated methods, each the few hooks in which it differs from FedAvg."""

from __future__ import annotations

from typing import Any

from fedlib.core.algorithm import Algorithm
from fedlib.methods.fedavg import FedAvg
from fedlib.methods.fedper import FedPer
from fedlib.methods.fedprox import FedProx
from fedlib.methods.local import LocalOnly

METHODS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (FedAvg, FedProx, FedPer, LocalOnly)
}


def get_method(name: str, **params: Any) -> Algorithm:
    """Build a method by name, e.g. ``get_method("fedprox", mu=0.1)``."""
    if name not in METHODS:
        raise ValueError(
            f"get_method: unknown method {name!r}; valid methods are {', '.join(sorted(METHODS))}."
        )
    cls = METHODS[name]
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(
            f"{cls.__name__}: unknown option(s) {unknown}; valid options are {sorted(known)}."
        )
    return cls(**params)


__all__ = ["METHODS", "FedAvg", "FedPer", "FedProx", "LocalOnly", "get_method"]
