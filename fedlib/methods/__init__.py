"""Federated methods, each the few hooks in which it differs from FedAvg."""

from __future__ import annotations

import dataclasses
from typing import Any

from fedlib.core.algorithm import Algorithm
from fedlib.methods.creff import CReFF
from fedlib.methods.ditto import Ditto
from fedlib.methods.fca import FCA
from fedlib.methods.fedavg import FedAvg
from fedlib.methods.fedbabu import FedBABU
from fedlib.methods.fedbn import FedBN
from fedlib.methods.fedlc import FedLC
from fedlib.methods.fednpr import FedNPR, FedNPRPer
from fedlib.methods.fedopt import FedAdam, FedAvgM, FedYogi
from fedlib.methods.fedper import FedPer
from fedlib.methods.fedprox import FedProx
from fedlib.methods.fedrep import FedRep
from fedlib.methods.fedrod import FedRoD
from fedlib.methods.fedrs import FedRS
from fedlib.methods.finetune import FedAvgFT
from fedlib.methods.local import LocalOnly
from fedlib.methods.moon import MOON
from fedlib.methods.npr import NPR, with_npr
from fedlib.methods.scaffold import SCAFFOLD

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
        FedBN,
        SCAFFOLD,
        FedAvgM,
        FedAdam,
        FedYogi,
        FedAvgFT,
        FCA,
        FedNPR,
        FedNPRPer,
    )
}
"""Every registered method, by the name ``get_method`` and the CLI take."""


def get_method(name: str, *, npr: bool = False, **params: Any) -> Algorithm:
    """Build a method by name, e.g. ``get_method("fedprox", mu=0.1)``.

    ``npr=True`` adds the NPR term to the method's local loss (:func:`with_npr`) and accepts
    the ``npr_*`` options of :class:`NPR`, e.g. ``get_method("fedprox", npr=True,
    npr_lambda=0.05)``.
    """
    if name not in METHODS:
        raise ValueError(
            f"get_method: unknown method {name!r}; valid methods are {', '.join(sorted(METHODS))}."
        )
    if not isinstance(npr, bool):
        raise TypeError(f"get_method: 'npr' must be a bool, got {npr!r}.")
    cls = METHODS[name]
    if npr:
        cls = with_npr(cls)
        params["npr"] = True
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        hint = " (the npr_* options need npr=True)" if any(
            k.startswith("npr_") for k in unknown) else ""
        raise TypeError(
            f"{cls.__name__}: unknown option(s) {unknown}{hint}; valid options are "
            f"{sorted(known)}."
        )
    return cls(**params)


__all__ = [
    "METHODS",
    "MOON",
    "SCAFFOLD",
    "CReFF",
    "Ditto",
    "FCA",
    "FedAdam",
    "FedAvg",
    "FedAvgFT",
    "FedAvgM",
    "FedBABU",
    "FedBN",
    "FedLC",
    "FedNPR",
    "FedNPRPer",
    "FedPer",
    "FedProx",
    "FedRS",
    "FedRep",
    "FedRoD",
    "FedYogi",
    "LocalOnly",
    "NPR",
    "get_method",
    "with_npr",
]
