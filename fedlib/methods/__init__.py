"""Federated methods, each the few hooks in which it differs from FedAvg."""

from __future__ import annotations

import dataclasses
from typing import Any

from fedlib.core.algorithm import Algorithm
from fedlib.methods.creff import CReFF
from fedlib.methods.ditto import Ditto
from fedlib.methods.fedavg import FedAvg
from fedlib.methods.fedbabu import FedBABU
from fedlib.methods.fedlc import FedLC
from fedlib.methods.fedper import FedPer
from fedlib.methods.fedprox import FedProx
from fedlib.methods.fedrep import FedRep
from fedlib.methods.fedrod import FedRoD
from fedlib.methods.fedrs import FedRS
from fedlib.methods.local import LocalOnly
from fedlib.methods.moon import MOON

METHODS: dict[str, type[Algorithm]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        FedProx,
        FedPer,
        LocalOnly,
        FedRS,
        FedLC,
        FedRoD,
        FedRep,
        FedBABU,
        Ditto,
        MOON,
        CReFF,
    )
}
"""Every registered method, by the name ``get_method`` and the CLI take."""


def get_method(name: str, **params: Any) -> Algorithm:
    """Build a method by name, e.g. ``get_method("fedprox", mu=0.1)``."""
    if name not in METHODS:
        raise ValueError(
            f"get_method: unknown method {name!r}; valid methods are {', '.join(sorted(METHODS))}."
        )
    cls = METHODS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(
            f"{cls.__name__}: unknown option(s) {unknown}; valid options are {sorted(known)}."
        )
    return cls(**params)


__all__ = [
    "METHODS",
    "MOON",
    "CReFF",
    "Ditto",
    "FedAvg",
    "FedBABU",
    "FedLC",
    "FedPer",
    "FedProx",
    "FedRS",
    "FedRep",
    "FedRoD",
    "LocalOnly",
    "get_method",
]
