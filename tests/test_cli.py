"""The command line end to end on SynthDerm, and its error messages."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedlib.cli import main, parse_value, report_table
from fedlib.data.registry import load_dataset

TINY = ["--data-option", "scale=0.02", "--data-option", "image_size=28", "--width", "2"]


def test_run_writes_history_and_summary_that_parse(tmp_path, capsys):
    out = tmp_path / "fedprox"
    code = main(["run", "--method", "fedprox", "--set", "mu=0.1", "--set", "lr=0.05",
                 "--dataset", "synthderm", "--rounds", "2", "--seeds", "0", "1",
                 "--out", str(out), "--no-progress", *TINY])
    assert code == 0
    for seed in (0, 1):
        history = pd.read_csv(out / f"seed{seed}" / "history.csv")
        assert list(history["round"]) == [1, 2]
        assert {"train_loss", "gen_accuracy", "gen_balanced_accuracy"} <= set(history.columns)
        clients = pd.read_csv(out / f"seed{seed}" / "clients.csv")
        assert set(clients["client"]) == set(range(6))
        summary = json.loads((out / f"seed{seed}" / "summary.json").read_text())
        assert summary["options"]["mu"] == 0.1
        assert 0.0 <= summary["gen_balanced_accuracy"] <= 1.0
    assert "seed 1: gen BAcc" in capsys.readouterr().out

    table = report_table([out])
    assert table.loc[0, "seeds"] == 2
    assert "±" in table.loc[0, "gen_balanced_accuracy"]
    assert main(["report", str(out)]) == 0


def test_run_on_a_dirichlet_split(tmp_path):
    code = main(["run", "--method", "fedavg", "--set", "loss=bsm", "--dataset", "synthderm",
                 "--partition", "dirichlet", "--clients", "4", "--alpha", "0.5",
                 "--rounds", "1", "--out", str(tmp_path / "d"), "--no-progress", *TINY])
    assert code == 0
    clients = pd.read_csv(tmp_path / "d" / "seed0" / "clients.csv")
    assert set(clients["client"]) == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "fedfoo"], "unknown method 'fedfoo'; valid methods: .*fedavg"),
        (["--method", "fedprox", "--set", "alpha=1"],
         "method 'fedprox' has no option 'alpha'; valid options: .*mu"),
        (["--method", "fedprox", "--set", "mu=-1"], "'mu' must be a float >= 0, got -1.0"),
        (["--method", "fedavg", "--rounds", "0"], "'num_rounds' must be an int >= 1, got 0"),
        (["--method", "fedavg", "--dataset", "cifar"], "'name' must be one of 'synthderm'"),
        (["--method", "fedavg", "--partition", "dirichlet", "--alpha", "0"],
         "'alpha' must be a float > 0, got 0.0"),
        (["--method", "fedavg", "--data-option", "image_size=30"], "'image_size'"),
    ],
)
def test_run_rejects_bad_options_with_a_clear_message(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        main(["run", "--out", str(tmp_path / "x"), "--no-progress", *TINY, *argv])


def test_methods_lists_every_method_with_its_options(capsys):
    from fedlib.methods import METHODS

    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    for name in METHODS:
        assert f"{name}:" in text
    assert "mu = 0.01" in text


def test_datasets_lists_the_embedded_and_real_datasets(capsys):
    assert main(["datasets"]) == 0
    text = capsys.readouterr().out
    assert "synthderm:" in text and "isic2019:" in text


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
