"""The committed results table of the default grid (``results/``): complete, consistent with the
grid file and with :func:`fedlib.grid.collect`, and reproduced by rerunning one of its cells."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedlib.cli import main
from fedlib.grid import (
    collect,
    load_grid,
    missing_cells,
    paper_tables,
    quantized_dir,
    run_dir,
    run_grid,
    sub_grid,
)

ROOT = Path(__file__).resolve().parent.parent
GRID_FILE = ROOT / "results" / "default.json"
RESULTS = ROOT / "results" / "default" / "results.csv"
MACHINE = ROOT / "results" / "default" / "machine.json"
COLUMNS = ["kind", "dataset", "method", "seed", "variant", "metric", "value"]
CELL = ("SynthDerm sites", "FedAvg", 0)
"""The cell the regeneration test reruns: one of the cheapest (a few CPU seconds)."""


def committed() -> pd.DataFrame:
    return pd.read_csv(RESULTS, keep_default_na=False)


def test_the_committed_table_holds_every_cell_of_the_grid_and_nothing_else():
    grid, table = load_grid(GRID_FILE), committed()
    assert list(table.columns) == COLUMNS
    assert missing_cells(grid, table) == []
    cells = {(d, m, s) for d, m, s in grid.cells()}
    quantized = {(d, m, s, v) for d, m in grid.quantize["runs"]
                 for v in grid.quantize["methods"] for s in grid.seeds}
    rows = {(r.kind, r.dataset, r.method, r.seed, r.variant) for r in table.itertuples()}
    strays = [r for r in rows if (r[1], r[2], r[3]) not in cells
              or (r[0] == "quantized" and (r[1], r[2], r[3], r[4]) not in quantized)]
    assert not strays, f"rows of no cell of {GRID_FILE.name}: {strays[:5]}"
    assert np.isfinite(table["value"].to_numpy(dtype=float)).all()
    machine = json.loads(MACHINE.read_text())
    assert machine["rows"] == len(table) and machine["grid"] == GRID_FILE.name
    assert machine["cells"] == {"runs": len(grid.cells()), "quantizations": len(quantized)}


def _summaries_from(table: pd.DataFrame, out: Path, grid) -> None:
    """Write the summary.json files a grid folder would hold, from the table's rows."""
    runs: dict[tuple, dict] = {}
    quantized: dict[tuple, dict] = {}
    for r in table.itertuples():
        if r.kind == "quantized":
            quantized.setdefault((r.dataset, r.method, r.variant, r.seed), {})[r.metric] = r.value
            continue
        summary = runs.setdefault((r.dataset, r.method, r.seed), {})
        if r.kind == "run":
            summary[r.metric] = r.value
        elif r.kind == "client":
            summary.setdefault(f"{r.metric}_per_client", {})[r.variant] = r.value
        elif r.kind == "head_pairing":
            match = re.fullmatch(r"(\w+)/(\w+)( \(default\))?", r.variant)
            assert match, f"head pairing {r.variant!r} is not 'global/local[ (default)]'"
            pairings = summary.setdefault("head_pairings", [])
            pairing = next((p for p in pairings if p["variant"] == r.variant), None)
            if pairing is None:
                pairing = {"variant": r.variant, "fca_global_head": match[1],
                           "fca_local_head": match[2], "default": bool(match[3])}
                pairings.append(pairing)
            pairing[r.metric] = r.value
        else:
            raise AssertionError(f"unknown kind {r.kind!r}")
    for (dataset, method, seed), summary in runs.items():
        folder = run_dir(out, dataset, method) / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(summary))
    for (dataset, method, variant, seed), summary in quantized.items():
        folder = quantized_dir(out, dataset, method, variant) / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(summary))


def test_summaries_rebuilt_from_the_table_collect_back_to_it_and_render_every_table(tmp_path):
    grid, table = load_grid(GRID_FILE), committed()
    _summaries_from(table, tmp_path, grid)
    pd.testing.assert_frame_equal(collect(grid, tmp_path), table, check_dtype=False)
    tables = paper_tables(table, grid)
    assert set(tables) == {"comparison", "npr_deltas", "fca_heads", "segmentation",
                           "segmentation_clients", "quantized"}
    classification = [d for d in grid.datasets
                      if "gen_balanced_accuracy" in set(table[table["dataset"] == d]["metric"])]
    expected = [(d, m) for d in classification for m in grid.methods_for(d)]
    assert list(map(tuple, tables["comparison"][["dataset", "method"]].values)) == expected
    assert (tables["comparison"]["seeds"] == len(grid.seeds)).all()
    plugins = [(d, m[: -len("+NPR")]) for d, m in expected if m.endswith("+NPR")]
    assert list(map(tuple, tables["npr_deltas"][["dataset", "method"]].values)) == plugins
    fca = tables["fca_heads"]
    two_heads = [(d, m) for d, m in expected if grid.methods[m]["method"] == "fca"]
    assert len(fca) == 4 * len(two_heads)  # four head pairings each
    assert set(map(tuple, fca[["dataset", "method"]].values)) == set(two_heads)
    assert set(tables["quantized"]["variant"]) == set(grid.quantize["methods"])
    assert not tables["segmentation"].isin(["n/a"])["gen_dice"].any()


def test_one_cell_of_the_grid_regenerates_to_the_committed_rows(tmp_path):
    """Rerun one cell exactly as the grid ran it (same entries, seed and CLI) and compare."""
    recorded = json.loads(MACHINE.read_text())["machine"]["torch"]
    if recorded != torch.__version__:
        pytest.skip(f"the table was made with torch {recorded}, this is torch "
                    f"{torch.__version__}: results may differ in the last digits.")
    dataset, method, seed = CELL
    grid = sub_grid(load_grid(GRID_FILE), datasets=[dataset], methods=[method], seeds=[seed],
                    quantize=False)
    fresh = run_grid(grid, tmp_path, run=main, log=lambda *_: None)
    table = committed()
    want = table[(table["dataset"] == dataset) & (table["method"] == method)
                 & (table["seed"] == seed) & (table["kind"] != "quantized")]
    keys = ["kind", "variant", "metric"]
    assert not want.empty
    assert fresh[keys].values.tolist() == want[keys].values.tolist()
    np.testing.assert_allclose(fresh["value"].to_numpy(), want["value"].to_numpy(),
                               rtol=0, atol=1e-6)
