"""fedlib methods on Flower: the same server and client halves across real machines.

The in-process simulator (:class:`fedlib.core.Simulation`) and this adapter drive the same
:class:`~fedlib.core.Algorithm` objects. Here the server half runs in a Flower Strategy
(:class:`FedlibStrategy`) and the client half in a Flower ClientApp (:func:`make_client_app`)
on each SuperNode, which reads its own data from its own folder. What crosses the wire is the
method's round message and reply as Flower records (:mod:`fedlib.flower.records`); each
client's persistent state stays on its node.

:func:`run_in_process` plays the whole message path in one process (no engine), and
:mod:`fedlib.flower.app` holds the deployed ServerApp and ClientApp that the thin app folder
``flower_app/`` points Flower at. Needs the optional extra: ``pip install 'fedlib[flower]'``
(Flower 1.42).
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fedlib.flower needs Flower 1.42: pip install 'fedlib[flower]' (or 'flwr>=1.42,<1.43')."
    ) from exc

from fedlib.flower.client import (
    ClientSetup,
    FedlibClient,
    NodeStateStore,
    Site,
    local_round,
    make_client_app,
)
from fedlib.flower.inprocess import InProcessGrid, InProcessRun, run_in_process
from fedlib.flower.strategy import FedlibStrategy, NodeFailure, sample_partitions

__all__ = [
    "ClientSetup",
    "FedlibClient",
    "FedlibStrategy",
    "InProcessGrid",
    "InProcessRun",
    "NodeFailure",
    "NodeStateStore",
    "Site",
    "local_round",
    "make_client_app",
    "run_in_process",
    "sample_partitions",
]
