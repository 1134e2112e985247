"""The command line end to end on SynthDerm, and its error messages (one line each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedlib.cli import main, parse_value
from fedlib.data.registry import load_dataset
from fedlib.runs import report_table, write_json

TINY = ["--data-option", "scale=0.02", "--data-option", "image_size=28", "--width", "2"]
REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m fedlib ...`` in a fresh process, one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "fedlib", *argv], capture_output=True,
                          text=True, cwd=cwd or REPO, env=env, timeout=300)


def test_run_writes_history_summary_config_and_weights(tmp_path, capsys):
    out = tmp_path / "fedprox"
    code = main(["run", "--method", "fedprox", "--set", "mu=0.1", "--set", "lr=0.05",
                 "--dataset", "synthderm", "--rounds", "2", "--seeds", "0", "1",
                 "--out", str(out), "--no-progress", *TINY])
    assert code == 0
    for seed in (0, 1):
        history = pd.read_csv(out / f"seed{seed}" / "history.csv")
        assert list(history["round"]) == [1, 2] and "train_loss" in history.columns
        clients = pd.read_csv(out / f"seed{seed}" / "clients.csv")
        assert set(clients["client"]) == set(range(6))
        summary = json.loads((out / f"seed{seed}" / "summary.json").read_text())
        assert summary["options"]["mu"] == 0.1
        assert 0.0 <= summary["gen_balanced_accuracy"] <= 1.0
        config = json.loads((out / f"seed{seed}" / "config.json").read_text())
        assert config["method"] == {"name": "fedprox", "params": summary["options"]}
        assert config["dataset"]["options"] == {"scale": 0.02, "image_size": 28}
        assert config["model"] == {"name": "SmallCNN",
                                   "kwargs": {"in_channels": 3, "num_classes": 8, "width": 2}}
        weights = torch.load(out / f"seed{seed}" / "model.pt", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in weights.values())
    assert "seed 1: gen BAcc" in capsys.readouterr().out

    table, notes = report_table([out])
    assert table.loc[0, "seeds"] == 2 and notes == []
    assert "±" in table.loc[0, "gen_balanced_accuracy"]
    assert main(["report", str(out)]) == 0


def test_load_run_rebuilds_model_and_data_of_a_seed(tmp_path):
    from fedlib.cli import load_run

    out = tmp_path / "r"
    main(["run", "--method", "fedper", "--rounds", "1", "--seeds", "3", "--out", str(out),
          "--no-progress", *TINY])
    model, data, config = load_run(out, 3)
    assert config["seed"] == 3 and data.num_clients == 6
    saved = torch.load(out / "seed3" / "model.pt", weights_only=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    assert data.fingerprint() == config["dataset_fingerprint"]
    with pytest.raises(ValueError, match=r"no folder seed4 in .* \(found: seed3\)"):
        load_run(out, 4)


def test_run_on_a_dirichlet_split(tmp_path):
    code = main(["run", "--method", "fedavg", "--set", "loss=bsm", "--dataset", "synthderm",
                 "--partition", "dirichlet", "--clients", "4", "--alpha", "0.5",
                 "--rounds", "1", "--out", str(tmp_path / "d"), "--no-progress", *TINY])
    assert code == 0
    clients = pd.read_csv(tmp_path / "d" / "seed0" / "clients.csv")
    assert set(clients["client"]) == {0, 1, 2, 3}


def test_run_with_proportional_local_test_sets(tmp_path):
    assert main(["run", "--method", "fedavg", "--partition", "dirichlet", "--clients", "3",
                 "--local-test", "proportional", "--rounds", "1", "--out", str(tmp_path / "p"),
                 "--no-progress", *TINY]) == 0
    config = json.loads((tmp_path / "p" / "seed0" / "config.json").read_text())
    assert config["dataset"]["local_test"] == "proportional"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "fedfoo"], "unknown method 'fedfoo' for the classification dataset "
         "'synthderm'; valid methods: .*fedavg"),
        (["--method", "fedprox", "--set", "alpha=1"],
         "method 'fedprox' has no option 'alpha'; valid options: .*mu"),
        (["--method", "fedprox", "--set", "mu=-1"], "'mu' must be a float >= 0, got -1.0"),
        (["--method", "fedavg", "--rounds", "0"], "'num_rounds' must be an int >= 1, got 0"),
        (["--method", "fedavg", "--dataset", "cifar"], "'name' must be one of 'synthderm'"),
        (["--method", "fedavg", "--partition", "dirichlet", "--alpha", "0"],
         "'alpha' must be a float > 0, got 0.0"),
        (["--method", "fedavg", "--data-option", "image_size=30"], "'image_size'"),
        (["--method", "fedavg", "--threads", "0"], "--threads must be an int >= 1, got 0"),
        (["--method", "fedavg", "--device", "tpu"],
         "--device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'"),
        (["--method", "fedavg", "--checkpoint-every", "-1"],
         r"argument --checkpoint-every: must be an int >= 0 \(N: a checkpoint every N rounds "
         r"and after the last; 0: none\), got '-1'"),
        (["--method", "fedavg", "--checkpoint-every", "2.5"],
         r"argument --checkpoint-every: must be an int >= 0 .*, got '2.5'"),
        (["--method", "fedavg", "--seeds", "1", "1"], "--seeds must be distinct"),
        (["--method", "fedavg", "--dataset", "medmnist:foomnist"],
         "unknown MedMNIST dataset 'foomnist'"),
        (["--method", "fedavg", "--resume", "--overwrite"],
         "--resume and --overwrite exclude each other"),
    ],
)
def test_run_rejects_bad_options_with_one_line_and_no_folder(tmp_path, argv, message):
    with pytest.raises(SystemExit, match="^fedlib run: .*" + message) as info:
        main(["run", "--out", str(tmp_path / "x"), "--no-progress", *TINY, *argv])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()  # a failed validation leaves no empty folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_run_refuses_cuda_on_a_machine_without_it(tmp_path):
    with pytest.raises(SystemExit, match="--device cuda: CUDA is not available on this machine"):
        main(["run", "--method", "fedavg", "--device", "cuda", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_run_refuses_an_out_below_a_file(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit, match=r"fedlib run: --out .*file/run: .*file is a file"):
        main(["run", "--method", "fedavg", "--out", str(tmp_path / "file" / "run")])
    with pytest.raises(SystemExit, match=r"fedlib run: --out .*file is a file, not a folder"):
        main(["run", "--method", "fedavg", "--out", str(tmp_path / "file")])


def test_a_failure_is_one_line_and_debug_shows_the_traceback(tmp_path):
    plain = run_cli("run", "--method", "fedavg", "--threads", "0", "--out", str(tmp_path / "x"))
    assert plain.returncode != 0
    assert plain.stderr.strip().splitlines() == [
        "fedlib run: --threads must be an int >= 1, got 0."]
    debug = run_cli("run", "--method", "fedavg", "--threads", "0", "--debug",
                    "--out", str(tmp_path / "x"))
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr and "CLIError" in debug.stderr
    usage = run_cli("run", "--method", "fedavg", "--threads", "abc", "--out", "x")
    assert usage.returncode != 0
    assert usage.stderr.strip().splitlines() == [
        "fedlib run: argument --threads: invalid int value: 'abc' (see fedlib run --help)."]


def _finished_run(tmp_path: Path, name: str = "r", seeds=("0",), method="fedavg") -> Path:
    out = tmp_path / name
    assert main(["run", "--method", method, "--rounds", "1", "--seeds", *seeds,
                 "--out", str(out), "--no-progress", *TINY]) == 0
    return out


def test_report_errors_are_one_line(tmp_path):
    out = _finished_run(tmp_path)
    summary = out / "seed0" / "summary.json"
    with pytest.raises(SystemExit, match="fedlib report: no metric 'no_such_metric' in the "
                                         "summaries of .*; available: .*gen_accuracy"):
        main(["report", str(out), "--metrics", "no_such_metric"])
    text = summary.read_text()
    summary.write_text(text[: len(text) // 2])
    with pytest.raises(SystemExit, match=r"fedlib report: .*summary.json is not valid JSON"):
        main(["report", str(out)])
    summary.write_text("")
    with pytest.raises(SystemExit, match=r"fedlib report: .*summary.json is empty"):
        main(["report", str(out)])
    summary.write_text("[1, 2]")
    with pytest.raises(SystemExit, match=r"summary.json must hold a JSON object, found list"):
        main(["report", str(out)])
    with pytest.raises(SystemExit, match=r"fedlib report: no seed\*/summary.json under"):
        main(["report", str(tmp_path)])


def test_summary_json_never_holds_a_bare_nan(tmp_path):
    write_json(tmp_path / "s.json", {"a": float("nan"), "b": [np.float32(np.inf), 1.5]})
    text = (tmp_path / "s.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.5]}
    out = _finished_run(tmp_path)  # one round of 8 classes: some per-class metrics are NaN
    raw = (out / "seed0" / "summary.json").read_text()
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"bare {c} in summary.json"))


def test_methods_lists_every_method_with_its_options(capsys):
    from fedlib.methods import METHODS

    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    for name in METHODS:
        assert f"{name}:" in text
    assert "mu = 0.01" in text


def test_datasets_lists_the_embedded_real_and_own_datasets(capsys):
    assert main(["datasets"]) == 0
    text = capsys.readouterr().out
    for name in ("synthderm:", "isic2019:", "ham10000:", "busi:", "medmnist:<name>:", ".npz"):
        assert name in text


def test_parse_value_follows_the_default_type():
    assert parse_value("0.5", 1.0) == 0.5
    assert parse_value("3", 1) == 3
    assert parse_value("false", True) is False
    assert parse_value("60,70", (1, 2)) == (60, 70)
    assert parse_value("none", None) is None
    with pytest.raises(ValueError):
        parse_value("maybe", True)


def test_load_dataset_rejects_more_clients_than_samples():
    with pytest.raises(ValueError, match="'num_clients'=5000 is more than the"):
        load_dataset("synthderm", partition="dirichlet", num_clients=5000, scale=0.02,
                     image_size=28)
    with pytest.raises(ValueError, match="partition 'sites' has 6 clients"):
        load_dataset("synthderm", num_clients=3, scale=0.02, image_size=28)


def test_long_tail_split_keeps_the_largest_feasible_head():
    from fedlib.data.partitions import longtail_counts
    from fedlib.data.registry import largest_longtail_head

    # counts (100, 50, 3), IF 4: class 2 needs floor(n / 4) <= 3 -> n <= 12 (hence 12, 6, 3);
    # class 1 needs floor(n / 2) <= 50 -> n <= 100; class 0 n <= 100. Head = 12.
    labels = np.repeat([0, 1, 2], [100, 50, 3])
    head = largest_longtail_head(labels, 3, 4.0)
    assert head == 12
    assert (longtail_counts(head, 3, 4.0) <= [100, 50, 3]).all()

    data = load_dataset("synthderm", partition="dirichlet", num_clients=10, alpha=0.5,
                        imbalance_factor=50.0, scale=0.07, image_size=28)
    counts = data.class_counts("train").sum(0) + data.class_counts("test").sum(0)
    assert counts[0] == counts.max() and counts[-1] == counts.min()
    assert counts.sum() > 300
