"""The deployed apps: a ServerApp and a ClientApp configured by Flower's run and node configs.

The thin app folder ``flower_app/`` points Flower at :func:`server_app` and
:func:`client_app`; everything else comes from the installed fedlib.

Run config (``[tool.flwr.app.config]``, overridden with ``flwr run --run-config``):

====================  ===========================================================
key                   meaning
====================  ===========================================================
``num-server-rounds`` rounds to play
``seed``              the run's seed (initial model, sampling, local shuffles)
``method``            a name of :data:`fedlib.methods.METHODS`
``method-options``    ``"key=value;key=value"`` (as ``python -m fedlib run --set``)
``in-channels``,      the model: ``SmallCNN(in-channels, num-classes, width=width)``
``num-classes``,
``width``
``fraction``,         sampling (:func:`~fedlib.flower.strategy.sample_partitions`)
``client-sampling``
``on-node-failure``   ``"fail"`` or ``"skip"`` (:class:`~fedlib.flower.FedlibStrategy`)
``evaluate``          score the models on the nodes' test splits after each round
``round-timeout``     seconds a round waits for the nodes' replies
``identify-timeout``  seconds to wait for every partition's node at the start
``out-dir``           where the ServerApp writes ``global.pt`` (the global weights),
                      ``history.json`` and, after every round, ``progress.json``
                      (empty: nothing is written)
====================  ===========================================================

Node config (``flower-supernode --node-config``): ``partition-id``, ``num-partitions``,
``data-dir`` (the site folder, :mod:`fedlib.flower.sites`), optionally ``state-dir`` (client
state kept in files that survive a restart of the node) and ``device``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from torch import nn

from fedlib._atomic import atomic_write_text
from fedlib.core.algorithm import Algorithm
from fedlib.core.checkpoint import save_weights
from fedlib.flower.client import ClientSetup, FedlibClient, NodeStateStore, make_client_app
from fedlib.flower.sites import read_site
from fedlib.flower.strategy import FedlibStrategy

__all__ = ["RUN_CONFIG", "client_app", "method_and_model", "server_app", "weights_digest"]

RUN_CONFIG: dict[str, Any] = {
    "num-server-rounds": 2,
    "seed": 0,
    "method": "fedavg",
    "method-options": "",
    "in-channels": 3,
    "num-classes": 3,
    "width": 8,
    "fraction": 1.0,
    "client-sampling": "uniform",
    "on-node-failure": "fail",
    "evaluate": False,
    "round-timeout": 600.0,
    "identify-timeout": 120.0,
    "out-dir": "",
}
"""The run config's keys and defaults (the app folder's ``pyproject.toml`` repeats them)."""


def _settings(run_config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(run_config) - set(RUN_CONFIG))
    if unknown:
        raise ValueError(f"fedlib.flower: unknown run config key(s) {unknown}; the keys are "
                         f"{sorted(RUN_CONFIG)}.")
    return {**RUN_CONFIG, **dict(run_config)}


def method_and_model(run_config: Mapping[str, Any]) -> tuple[Algorithm, Callable[[], nn.Module]]:
    """The method and the model builder a run config describes (server and nodes alike)."""
    from fedlib.cli import parse_settings
    from fedlib.methods import get_method
    from fedlib.models import SmallCNN

    s = _settings(run_config)
    pairs = [p.strip() for p in str(s["method-options"]).split(";") if p.strip()]
    options = parse_settings(pairs, s["method"])
    npr = bool(options.pop("npr", False))
    algorithm = get_method(s["method"], npr=npr, **options)
    shape = dict(in_channels=int(s["in-channels"]), num_classes=int(s["num-classes"]),
                 width=int(s["width"]))
    return algorithm, lambda: SmallCNN(**shape)


def weights_digest(weights: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the weights' bytes, key by key (a short way to compare two runs)."""
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(key.encode())
        digest.update(weights[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _write_json(path: Path, payload: Any) -> None:
    import json

    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")


def server_app() -> ServerApp:
    """The ServerApp: a :class:`FedlibStrategy` for the run config's method and model."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        s = _settings(context.run_config)
        algorithm, model_fn = method_and_model(s)
        out = Path(s["out-dir"]) if s["out-dir"] else None

        def on_round(strategy: FedlibStrategy, record: dict[str, Any]) -> None:
            if out is not None:
                _write_json(out / "progress.json", {"rounds": strategy.history_})

        strategy = FedlibStrategy(
            algorithm, model_fn, seed=int(s["seed"]), fraction=float(s["fraction"]),
            client_sampling=s["client-sampling"], on_node_failure=s["on-node-failure"],
            evaluate=bool(s["evaluate"]), identify_timeout=float(s["identify-timeout"]),
            on_round=on_round,
        )
        strategy.start(grid, strategy.initial_arrays(), num_rounds=int(s["num-server-rounds"]),
                       timeout=float(s["round-timeout"]))
        digest = weights_digest(strategy.state_.weights)
        if out is not None:
            save_weights(out / "global.pt", strategy.state_.weights)
            _write_json(out / "history.json", {
                "rounds": strategy.history_, "clients": strategy.client_records_,
                "partitions": {str(n): p for n, p in strategy.partition_of_.items()},
                "weights_sha256": digest,
            })
        logging.getLogger("flwr").info(  # Flower's log reaches `flwr run --stream`
            "fedlib: %s finished %d rounds; global weights sha256 %s",
            algorithm.name, strategy.state_.round, digest)

    return app


def deployed_setup(context: Context) -> ClientSetup:
    """A node's setup from its run config and node config (one call per message: Flower
    starts a fresh process for each)."""
    s = _settings(context.run_config)
    node = context.node_config
    for key in ("partition-id", "num-partitions", "data-dir"):
        if key not in node:
            raise KeyError(f"fedlib.flower: the node config lacks {key!r}; start the SuperNode "
                           "with --node-config 'partition-id=K num-partitions=N data-dir=PATH'.")
    algorithm, model_fn = method_and_model(s)
    site = read_site(node["data-dir"])
    if site.num_classes != int(s["num-classes"]):
        raise ValueError(f"fedlib.flower: the site folder {node['data-dir']} has "
                         f"{site.num_classes} classes; the run expects {s['num-classes']}.")
    p = int(node["partition-id"])
    client = FedlibClient(algorithm, model_fn, seed=int(s["seed"]),
                          device=node.get("device") or None)
    store = NodeStateStore(context, p, node.get("state-dir") or None)
    return ClientSetup(client, site, p, int(node["num-partitions"]), store)


def client_app() -> ClientApp:
    """The ClientApp of a deployment: data from the node's ``data-dir``."""
    return make_client_app(deployed_setup)
