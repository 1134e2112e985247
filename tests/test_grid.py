"""The experiment grid: validation, the tidy table and its paper tables, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from fedlib.cli import main
from fedlib.grid import (
    GridError,
    _run_argv,
    collect,
    load_grid,
    missing_cells,
    paper_tables,
    publish,
    run_dir,
    run_grid,
    sub_grid,
)

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
    assert deltas["delta_gen_balanced_accuracy"] == (
        f"{round(diff.mean(), 3) + 0.0:+.3f} ± {diff.std():.3f}")


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


SEG_GRID = {
    "rounds": 2,
    "seeds": [0, 1],
    "datasets": {
        "Derm": {"dataset": "synthderm", "data_options": {"scale": 0.02}, "methods": ["FCA"]},
        "BUS": {"dataset": "synthbus_seg", "data_options": {"scale": 0.1}, "rounds": 3,
                "width": 12,
                "methods": {"LL": {}, "FedMix": {"set": {"fedmix_beta": 1.5}}}},
    },
    "methods": {
        "FCA": {"method": "fca"},
        "LL": {"method": "local", "data_options": {"supervision": "full"}},
        "FedMix": {"method": "fedmix", "set": {"tau": 0.9},
                   "data_options": {"supervision": "fedmix", "scale": 0.2}},
    },
}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"datasets": {"D": {"dataset": "synthderm", "methods": ["FedProx"]}}},
         r"dataset 'D' names method\(s\) \['FedProx'\]"),
        ({"datasets": {"D": {"dataset": "synthderm", "methods": []}}},
         "'methods' must be a non-empty list"),
        ({"datasets": {"D": {"dataset": "synthderm", "methods": {"FCA": {"mu": 1}}}}},
         r"expected \{\} or \{'set'"),
        ({"datasets": {"D": {"dataset": "synthderm", "epochs": 2}}},
         r"dataset 'D' has unknown key\(s\) \['epochs'\]"),
        ({"datasets": {"D": {"dataset": "synthderm", "rounds": 0}}},
         "dataset 'D': 'rounds' must be an int >= 1"),
        ({"methods": {"A": {"method": "fedavg", "options": {}}}},
         r"method 'A' has unknown key\(s\) \['options'\]"),
        ({"methods": {"A": {"method": "fedavg", "set": "mu=1"}}}, "'set' must be a mapping"),
        ({"seeds": [1, 1]}, "'seeds' must be distinct"),
        ({"quantize": {"runs": [["BUS", "FCA"]]}}, "a \\(dataset, method\\) pair this grid"),
        ({"quantize": {"bits": 2}}, r"'quantize' has unknown key\(s\) \['bits'\]"),
    ],
)
def test_per_dataset_entries_are_validated(change, match):
    with pytest.raises(GridError, match=match):
        load_grid({**SEG_GRID, **change})


def test_datasets_choose_their_methods_rounds_width_and_options(tmp_path):
    grid = load_grid(SEG_GRID)
    assert grid.cells() == [("Derm", "FCA", 0), ("Derm", "FCA", 1), ("BUS", "LL", 0),
                            ("BUS", "FedMix", 0), ("BUS", "LL", 1), ("BUS", "FedMix", 1)]
    argv = _run_argv(grid, tmp_path, "BUS", "FedMix", 1)
    flag = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i] in
            ("--rounds", "--width", "--seeds", "--method")}
    assert flag == {"--rounds": "3", "--width": "12", "--seeds": "1", "--method": "fedmix"}
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert sets == ["tau=0.9", "fedmix_beta=1.5"]
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "--data-option"]
    assert options == ["scale=0.2", "supervision=fedmix"]  # the method's value wins
    derm = _run_argv(grid, tmp_path, "Derm", "FCA", 0)
    assert "--width" not in derm and derm[derm.index("--rounds") + 1] == "2"


def test_a_sub_grid_runs_its_cells_exactly_as_the_whole_grid(tmp_path):
    grid = load_grid({**SEG_GRID, "quantize": {"runs": [["Derm", "FCA"]],
                                               "methods": {"U2": {"method": "uniform"}}}})
    part = sub_grid(grid, datasets=["BUS"], methods=["FedMix"], seeds=[1])
    assert part.cells() == [("BUS", "FedMix", 1)] and part.quantize == {}
    assert _run_argv(part, tmp_path, "BUS", "FedMix", 1) == _run_argv(
        grid, tmp_path, "BUS", "FedMix", 1)
    kept = sub_grid(grid, datasets=["Derm"], seeds=[0])
    assert kept.quantize["runs"] == [["Derm", "FCA"]]
    assert sub_grid(grid, datasets=["Derm"], quantize=False).quantize == {}
    with pytest.raises(GridError, match=r"sub_grid: method\(s\) \['FedAvg'\] not in the grid"):
        sub_grid(grid, methods=["FedAvg"])
    with pytest.raises(GridError, match="share no cell"):
        sub_grid(grid, datasets=["Derm"], methods=["LL"])


def _write_summary(folder, summary):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary))


def test_segmentation_summaries_become_rows_and_the_dice_tables(tmp_path):
    dice = {("LL", 0): (0.40, {"BUSI": 0.1, "UDIAT": 0.7}),
            ("LL", 1): (0.50, {"BUSI": 0.3, "UDIAT": 0.7}),
            ("FedMix", 0): (0.70, {"BUSI": 0.6, "UDIAT": 0.8}),
            ("FedMix", 1): (0.80, {"BUSI": 0.7, "UDIAT": 0.9})}
    for (method, seed), (mean, clients) in dice.items():
        summary = {"method": method, "seed": seed, "gen_dice": mean - 0.25,
                   "gen_dice_per_client": {c: v - 0.25 for c, v in clients.items()},
                   "num_test_images": {"BUSI": 19, "UDIAT": 5}, "options": {"tau": 0.9}}
        if method == "LL":
            summary |= {"spec_dice": mean, "spec_dice_per_client": clients}
        _write_summary(run_dir(tmp_path, "BUS", method) / f"seed{seed}", summary)
    table = collect(SEG_GRID, tmp_path)
    assert set(table["kind"]) == {"run", "client"}
    assert set(table["metric"]) == {"gen_dice", "spec_dice"}
    client = table[(table["kind"] == "client") & (table["method"] == "LL")
                   & (table["metric"] == "spec_dice") & (table["variant"] == "BUSI")]
    assert client.set_index("seed")["value"].to_dict() == {0: 0.1, 1: 0.3}
    tables = paper_tables(table, SEG_GRID)
    assert set(tables) == {"segmentation", "segmentation_clients"}
    seg = tables["segmentation"].set_index("method")
    assert list(seg.index) == ["LL", "FedMix"]  # the grid's order, not the sorted one
    assert seg.loc["LL", "spec_dice"] == "0.450 ± 0.071"
    assert seg.loc["FedMix", "gen_dice"] == "0.500 ± 0.071"
    assert seg.loc["FedMix", "spec_dice"] == "n/a" and seg.loc["LL", "seeds"] == 2
    per_client = tables["segmentation_clients"].set_index(["method", "client"])
    assert per_client.loc[("FedMix", "UDIAT"), "gen_dice"] == "0.600 ± 0.071"
    assert per_client.loc[("LL", "BUSI"), "spec_dice"] == "0.200 ± 0.141"


def test_classification_tables_leave_segmentation_rows_out(tmp_path):
    pairing = {"fca_global_head": "fed", "fca_local_head": "per", "default": True,
               "gen_balanced_accuracy": 0.5, "spec_balanced_accuracy": 0.6}
    for seed in (0, 1):
        _write_summary(run_dir(tmp_path, "Derm", "FCA") / f"seed{seed}",
                       {"gen_balanced_accuracy": 0.5 + seed / 10, "spec_balanced_accuracy": 0.6,
                        "gen_bauc": 0.8, "spec_bauc": 0.9, "head_pairings": [pairing]})
        _write_summary(run_dir(tmp_path, "BUS", "FedMix") / f"seed{seed}", {"gen_dice": 0.7})
    tables = paper_tables(collect(SEG_GRID, tmp_path))
    assert set(tables) == {"comparison", "fca_heads", "segmentation"}
    assert tables["comparison"][["dataset", "method"]].values.tolist() == [["Derm", "FCA"]]
    assert tables["comparison"]["gen_balanced_accuracy"].item() == "0.550 ± 0.071"
    assert tables["fca_heads"]["variant"].item() == "fed/per (default)"
    assert tables["segmentation"]["gen_dice"].item() == "0.700 ± 0.000"


def fake_cli(argv):
    """Stands in for ``fedlib.cli.main``: writes the summary a run or quantization would."""
    out = argv[argv.index("--out") + 1]
    if argv[0] == "run":
        seed = int(argv[argv.index("--seeds") + 1])
        _write_summary(Path(out) / f"seed{seed}", {"gen_dice": 0.5 + seed / 100})
    else:
        _write_summary(Path(out), {"balanced_accuracy": 0.4, "average_bits": 2.0})
    return 0


def test_run_grid_times_each_cell_and_publish_records_the_machine(tmp_path):
    grid = load_grid({**SEG_GRID, "quantize": {"runs": [["BUS", "LL"]],
                                               "methods": {"U2": {"method": "uniform"}}}})
    out = tmp_path / "g"
    run_grid(sub_grid(grid, seeds=[0]), out, run=fake_cli, log=lambda *_: None)
    with pytest.raises(GridError, match=r"publish: 4 cell\(s\) of the grid are not finished"):
        publish(out, tmp_path / "dest", grid)
    table = run_grid(grid, out, run=fake_cli, log=lambda *_: None)
    timing = pd.read_csv(out / "timing.csv", keep_default_na=False)
    assert len(timing) == len(grid.cells()) + 2  # every cell once, two quantizations
    assert (timing["cpu_s"] >= 0).all() and (timing["wall_s"] >= 0).all()
    assert set(timing[timing["kind"] == "quantized"]["variant"]) == {"U2"}
    record = publish(out, tmp_path / "dest", grid)
    assert (tmp_path / "dest" / "results.csv").read_text() == (out / "results.csv").read_text()
    written = json.loads((tmp_path / "dest" / "machine.json").read_text())
    assert written == record and written["rows"] == len(table)
    assert written["machine"]["torch"] == torch.__version__
    assert written["cells"] == {"runs": 6, "quantizations": 2}
    assert written["cpu_s"] == round(timing["cpu_s"].sum(), 1)
    assert missing_cells(grid, table) == []
