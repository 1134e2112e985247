"""The experiment grid: validation, the tidy table and its paper tables, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from fedlib.cli import main
from fedlib.grid import GridError, collect, load_grid, paper_tables, run_dir, run_grid

GRID = {
    "rounds": 1,
    "width": 4,
    "seeds": [0, 1],
    "datasets": {"SynthDerm tiny": {"dataset": "synthderm",
                                    "data_options": {"scale": 0.02, "image_size": 28}}},
    "methods": {"FedAvg": {"method": "fedavg", "set": {"loss": "bsm"}},
                "FedAvg+NPR": {"method": "fedavg", "set": {"loss": "bsm", "npr": True}}},
}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"methods": {}}, "'methods' must be a non-empty mapping"),
        ({"methods": {"A": {"set": {}}}}, "method 'A' needs a 'method' name"),
        ({"seeds": [0, -1]}, "'seeds' must be a non-empty list of ints >= 0"),
        ({"rounds": 0}, "'rounds' must be an int >= 1"),
        ({"epochs": 3}, r"unknown key\(s\) \['epochs'\]"),
        ({"quantize": {"runs": [["SynthDerm tiny", "FedProx"]]}}, "quantize run"),
    ],
)
def test_grid_files_are_validated(change, match):
    with pytest.raises(GridError, match=match):
        load_grid({**GRID, **change})


def test_a_grid_writes_one_tidy_table_and_its_paper_tables(tmp_path):
    table = run_grid(GRID, tmp_path / "g", run=main, log=lambda *_: None)
    assert set(table["kind"]) == {"run"}
    assert set(table["seed"]) == {0, 1} and set(table["method"]) == {"FedAvg", "FedAvg+NPR"}
    written = pd.read_csv(tmp_path / "g" / "results.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(written, table, check_dtype=False)
    summary = json.loads(
        (run_dir(tmp_path / "g", "SynthDerm tiny", "FedAvg+NPR") / "seed1" / "summary.json")
        .read_text())
    row = table[(table["method"] == "FedAvg+NPR") & (table["seed"] == 1)
                & (table["metric"] == "gen_balanced_accuracy")]
    assert row["value"].item() == summary["gen_balanced_accuracy"]
    tables = paper_tables(table)
    assert set(tables) == {"comparison", "npr_deltas"}
    deltas = tables["npr_deltas"].iloc[0]
    assert deltas["method"] == "FedAvg" and deltas["seeds"] == 2
    runs = table.pivot_table(index=["method", "seed"], columns="metric", values="value")
    diff = (runs.loc["FedAvg+NPR"] - runs.loc["FedAvg"])["gen_balanced_accuracy"]
    assert deltas["delta_gen_balanced_accuracy"] == f"{diff.mean():.3f} ± {diff.std():.3f}"


def test_a_killed_grid_resumes_to_the_same_table_without_repeating_cells(tmp_path):
    whole = run_grid(GRID, tmp_path / "whole", run=main, log=lambda *_: None)
    grid_file = tmp_path / "grid.json"
    grid_file.write_text(json.dumps(GRID))
    out = tmp_path / "killed"
    first = run_dir(out, "SynthDerm tiny", "FedAvg") / "seed0" / "summary.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fedlib", "grid", str(grid_file), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not first.is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.is_file(), "the grid finished no cell before the deadline"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    stamp = first.stat().st_mtime_ns
    done_before = len(list(out.glob("runs/*/seed*/summary.json")))
    assert 1 <= done_before < 4
    lines: list[str] = []
    resumed = run_grid(GRID, out, run=main, log=lines.append)
    assert sum("skipped" in line for line in lines) == done_before
    assert first.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(resumed, whole)
    assert collect(GRID, out).equals(whole)
