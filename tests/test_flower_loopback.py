"""fedlib deployed on Flower on 127.0.0.1: one SuperLink and two SuperNodes, each in its own
process group, with TLS certificates made at test time; each node reads its own data folder.

The run status comes from ``flwr list --format json`` (the CLI's exit code proves nothing), the
final global weights are compared with the in-process simulator's, and everything is torn down
by process group. One network serves every scenario (a few seconds per exchange are
orchestration, not training): FedAvg and FCA equal the simulator; then SuperNode 1 is killed
after the first round of two concurrent runs, one configured to skip a failed node (it
completes, equal to the adapter's in-process run that loses the same node) and one to fail: the
negative test, a run that fails is reported failed, with its reason, and writes no model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from flower_loopback import Loopback, make_certificates
from toy_federation import blobs

pytest.importorskip("flwr")

from fedlib.core import Simulation  # noqa: E402
from fedlib.core.checkpoint import load_weights  # noqa: E402
from fedlib.flower import run_in_process  # noqa: E402
from fedlib.flower.sites import write_site  # noqa: E402
from fedlib.methods import get_method  # noqa: E402
from fedlib.models import SmallCNN  # noqa: E402

pytestmark = pytest.mark.flower

WIDTH = 2
SEED = 1


def model() -> SmallCNN:
    return SmallCNN(3, 3, width=WIDTH)


def federation():
    return blobs(num_clients=2)


def simulated(method: str) -> dict[str, torch.Tensor]:
    sim = Simulation(get_method(method), model, federation(), num_rounds=2, seed=SEED,
                     eval_every=None, progress=False)
    sim.run()
    return sim.state_.weights


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    home = tmp_path_factory.mktemp("loopback")
    data = federation()
    sites = [home / f"site{k}" for k in range(2)]
    for k, folder in enumerate(sites):
        write_site(folder, data, k)
    net = Loopback(home, sites, tls=make_certificates(home / "certs"), state_dirs=True)
    with net:
        yield net
    assert net.alive() == [], "a started process group survived the teardown"


def config(net: Loopback, name: str, method: str, **extra) -> dict:
    return {"method": method, "num-server-rounds": 2, "seed": SEED, "width": WIDTH,
            "out-dir": str(net.home / name), **extra}


def test_fedavg_and_fca_deployed_equal_the_simulator(network):
    tic = time.monotonic()
    fedavg = network.submit(config(network, "fedavg", "fedavg"))
    status = network.wait(fedavg, network.home / "fedavg")
    seconds = time.monotonic() - tic
    assert status["status"] == "finished:completed", network.logs()
    fca = network.submit(config(network, "fca", "fca"))
    assert network.wait(fca, network.home / "fca")["status"] == "finished:completed", network.logs()
    print(f"\nFedAvg, 2 rounds on 2 SuperNodes with TLS: {seconds:.1f} s from submission")

    for name in ("fedavg", "fca"):
        deployed = load_weights(network.home / name / "global.pt")
        assert same(deployed, simulated(name)) == 0.0, name
        history = json.loads((network.home / name / "history.json").read_text())
        assert [r["clients"] for r in history["rounds"]] == [[0, 1], [0, 1]]
        assert sorted(history["partitions"].values()) == [0, 1]
    # FCA's personal heads stay on the nodes: the state after round 1 is committed, the
    # state after round 2 waits for a commit that a third round would bring
    for k in range(2):
        files = sorted(p.name for p in (network.home / f"state{k}").glob("run-*/*"))
        assert f"partition-{k}.committed.pt" in files and f"partition-{k}.pending.pt" in files


def _wait_for_round(folders: list[Path], round_: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = []
        for folder in folders:
            progress = folder / "progress.json"
            if progress.is_file():
                done.append(len(json.loads(progress.read_text())["rounds"]) >= round_)
        if len(done) == len(folders) and all(done):
            return
        time.sleep(0.5)
    raise TimeoutError(f"round {round_} not reached in {folders}")


def test_a_killed_supernode_is_skipped_or_fails_the_run_as_configured(network):
    skip = network.submit(config(network, "skip", "fedavg", **{"on-node-failure": "skip"}))
    fail = network.submit(config(network, "fail", "fedavg", **{"on-node-failure": "fail"}))
    _wait_for_round([network.home / "skip", network.home / "fail"], 1)
    network.stop(network.nodes[1])  # SIGTERM to SuperNode 1's process group, mid-run

    skipped = network.wait(skip, network.home / "skip")
    assert skipped["status"] == "finished:completed", network.logs()
    history = json.loads((network.home / "skip" / "history.json").read_text())
    assert [(r["clients"], r["failed"]) for r in history["rounds"]] == [([0, 1], []), ([0], [1])]

    def lose_node_1(run, record):
        if record["round"] == 1:
            run.grid.disconnect(1)

    expected = run_in_process(get_method("fedavg"), model, federation(), num_rounds=2,
                              seed=SEED, on_node_failure="skip", on_round=lose_node_1)
    deployed = load_weights(network.home / "skip" / "global.pt")
    assert same(deployed, expected.strategy.state_.weights) == 0.0

    # the negative test: a run that fails is reported failed, with the reason, and no model
    failed = network.wait(fail)
    assert failed["status"] == "finished:failed", network.logs()
    assert "round 2 failed (client 1:" in failed["status-details"]
    assert "on_node_failure='fail'" in failed["status-details"]
    assert not (network.home / "fail" / "global.pt").exists()
