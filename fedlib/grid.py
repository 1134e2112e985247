"""Experiment grids: methods x datasets x seeds run through ``fedlib run``, resumable, one table.

A grid is a JSON file (or a dict)::

    {
      "rounds": 10, "width": 8, "seeds": [0, 1, 2],
      "datasets": {"SynthDerm sites": {"dataset": "synthderm",
                                       "data_options": {"scale": 0.05, "image_size": 28}}},
      "methods": {"FedAvg-BSM": {"method": "fedavg", "set": {"loss": "bsm"}},
                  "FedNPR": {"method": "fednpr"}},
      "quantize": {"runs": [["SynthDerm sites", "FedAvg-BSM"]],
                   "methods": {"SDQ 4 bits": {"method": "sdq", "bits": 4}}}
    }

Each (dataset, method) pair is one run folder ``OUT/runs/<dataset>__<method>/`` written by
``fedlib run`` (settings fingerprinted, checkpointed every round, never overwritten), one seed
per cell; a dataset entry may also give ``partition``, ``clients``, ``alpha``,
``imbalance_factor`` and ``local_test`` as in ``fedlib run``. ``quantize`` applies
``fedlib quantize`` to the final models of the listed runs. :func:`run_grid` skips cells whose
seed already has its ``summary.json`` and resumes an interrupted one from its checkpoint, so a
killed grid rerun with the same command ends with the same table and repeats no finished cell.

:func:`collect` gathers every finished cell into one tidy table (one row per dataset, method,
seed and metric), written as ``OUT/results.csv``; :func:`paper_tables` renders the tables the
book's results appendix shows (mean and spread over seeds): the classification comparison
(generalization and specialization), NPR's plug-in deltas (each method with and without NPR,
paired by seed), FCA's four head pairings, and accuracy against average bits for quantization.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Grid", "collect", "load_grid", "paper_tables", "run_grid"]

CLASSIFICATION_METRICS = (
    "gen_balanced_accuracy",
    "gen_bauc",
    "spec_balanced_accuracy",
    "spec_bauc",
)
"""The summary metrics the comparison table shows (mean ± spread over seeds)."""
NPR_SUFFIX = "+NPR"
"""A method label ending in this is the same method with the NPR plug-in (plug-in deltas)."""


class GridError(ValueError):
    """A grid file that cannot be run: the message names the entry and what is wrong."""


@dataclass(frozen=True)
class Grid:
    """A parsed grid (see the module docstring for the file format)."""

    datasets: dict[str, dict[str, Any]]
    methods: dict[str, dict[str, Any]]
    seeds: tuple[int, ...]
    rounds: int
    width: int = 8
    quantize: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[tuple[str, str, int]]:
        """``(dataset label, method label, seed)`` in run order: dataset, then seed, then method
        (so an interrupted grid has every method for the seeds it finished)."""
        return [(d, m, s) for d in self.datasets for s in self.seeds for m in self.methods]


def _slug(label: str) -> str:
    """A folder name for a label: letters, digits, '-', '+', '.', '_' kept; others '_'."""
    return re.sub(r"[^A-Za-z0-9+._-]+", "_", label).strip("_") or "x"


def load_grid(source: str | Path | Mapping[str, Any]) -> Grid:
    """Read and validate a grid from a JSON file or a dict."""
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise GridError(f"load_grid: no grid file at {path}.")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise GridError(f"load_grid: {path} is not valid JSON ({exc}).") from exc
    known = {"datasets", "methods", "seeds", "rounds", "width", "quantize", "description"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise GridError(f"load_grid: unknown key(s) {unknown}; known keys: {sorted(known)}.")
    for key in ("datasets", "methods"):
        if not isinstance(raw.get(key), Mapping) or not raw[key]:
            raise GridError(f"load_grid: {key!r} must be a non-empty mapping of label to entry.")
    for label, entry in raw["methods"].items():
        if not isinstance(entry, Mapping) or "method" not in entry:
            raise GridError(f"load_grid: method {label!r} needs a 'method' name, got {entry!r}.")
    for label, entry in raw["datasets"].items():
        if not isinstance(entry, Mapping) or "dataset" not in entry:
            raise GridError(f"load_grid: dataset {label!r} needs a 'dataset' name, got {entry!r}.")
    slugs = [_slug(f"{d}__{m}") for d in raw["datasets"] for m in raw["methods"]]
    if len(set(slugs)) != len(slugs):
        raise GridError("load_grid: two labels map to the same folder name; rename one.")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds
    ):
        raise GridError(f"load_grid: 'seeds' must be a non-empty list of ints >= 0, got {seeds!r}.")
    rounds = raw.get("rounds", 10)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise GridError(f"load_grid: 'rounds' must be an int >= 1, got {rounds!r}.")
    quantize = dict(raw.get("quantize") or {})
    for pair in quantize.get("runs", []):
        if (not isinstance(pair, list | tuple) or len(pair) != 2
                or pair[0] not in raw["datasets"] or pair[1] not in raw["methods"]):
            raise GridError(
                f"load_grid: quantize run {pair!r} must be [dataset label, method label] of "
                "this grid."
            )
    return Grid(
        datasets={k: dict(v) for k, v in raw["datasets"].items()},
        methods={k: dict(v) for k, v in raw["methods"].items()},
        seeds=tuple(seeds),
        rounds=rounds,
        width=int(raw.get("width", 8)),
        quantize=quantize,
    )


def run_dir(out: Path, dataset: str, method: str) -> Path:
    """The ``fedlib run`` folder of a (dataset, method) pair."""
    return Path(out) / "runs" / _slug(f"{dataset}__{method}")


def _run_argv(grid: Grid, out: Path, dataset: str, method: str, seed: int) -> list[str]:
    data, spec = grid.datasets[dataset], grid.methods[method]
    argv = ["run", "--method", spec["method"], "--dataset", str(data["dataset"]),
            "--rounds", str(grid.rounds), "--width", str(grid.width), "--seeds", str(seed),
            "--out", str(run_dir(out, dataset, method)), "--no-progress"]
    for key, value in spec.get("set", {}).items():
        argv += ["--set", f"{key}={_cli_value(value)}"]
    for key, value in data.get("data_options", {}).items():
        argv += ["--data-option", f"{key}={_cli_value(value)}"]
    for key in ("partition", "clients", "alpha", "imbalance_factor", "local_test"):
        if key in data:
            argv += ["--" + key.replace("_", "-"), str(data[key])]
    return argv


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def run_grid(
    source: str | Path | Mapping[str, Any] | Grid,
    out: str | Path,
    *,
    run: Callable[[list[str]], int],
    log: Callable[[str], Any] = print,
) -> pd.DataFrame:
    """Run every unfinished cell of a grid, then write and return the results table.

    ``run`` executes one command line of the ``fedlib`` CLI: pass :func:`fedlib.cli.main`
    (``python -m fedlib grid`` does). A cell whose seed has a ``summary.json`` is skipped; one
    that was interrupted resumes from its last checkpoint (``fedlib run --resume``); the run
    folders refuse settings that differ from the ones they were started with.
    """
    grid = source if isinstance(source, Grid) else load_grid(source)
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    cells = grid.cells()
    for i, (dataset, method, seed) in enumerate(cells, start=1):
        folder = run_dir(out, dataset, method)
        if (folder / f"seed{seed}" / "summary.json").is_file():
            log(f"[{i}/{len(cells)}] {dataset} / {method} / seed {seed}: done earlier, skipped")
            continue
        log(f"[{i}/{len(cells)}] {dataset} / {method} / seed {seed}")
        argv = _run_argv(grid, out, dataset, method, seed)
        run(argv + (["--resume"] if folder.exists() else []))
    for dataset, method in grid.quantize.get("runs", []):
        for label, spec in grid.quantize.get("methods", {}).items():
            for seed in grid.seeds:
                target = out / "quantized" / _slug(f"{dataset}__{method}__{label}") / f"seed{seed}"
                if (target / "summary.json").is_file():
                    continue
                if target.exists():  # interrupted: keep its files aside, start it again
                    aside = target.with_name(f"{target.name}.interrupted")
                    n = 1
                    while aside.exists():
                        n += 1
                        aside = target.with_name(f"{target.name}.interrupted{n}")
                    target.rename(aside)
                    log(f"moved the interrupted quantization {target} aside to {aside}")
                log(f"quantize {dataset} / {method} / seed {seed}: {label}")
                argv = ["quantize", str(run_dir(out, dataset, method)), "--seed", str(seed),
                        "--out", str(target)]
                for key, value in spec.items():
                    argv += [f"--{key.replace('_', '-')}", _cli_value(value)]
                run(argv)
    table = collect(grid, out)
    table.to_csv(out / "results.csv", index=False)
    return table


def collect(source: str | Path | Mapping[str, Any] | Grid, out: str | Path) -> pd.DataFrame:
    """The tidy results table of a grid's finished cells.

    Columns: ``kind`` ("run", "head_pairing" or "quantized"), ``dataset``, ``method``,
    ``seed``, ``variant`` (FCA's head pairing or the quantization label; "" otherwise),
    ``metric`` and ``value``. Rows are sorted, so equal results give byte-identical CSV files.
    """
    grid = source if isinstance(source, Grid) else load_grid(source)
    out = Path(out)
    rows: list[dict[str, Any]] = []
    for dataset, method, seed in grid.cells():
        path = run_dir(out, dataset, method) / f"seed{seed}" / "summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text())
        base = {"dataset": dataset, "method": method, "seed": seed}
        for metric, value in summary.items():
            if metric.startswith(("gen_", "spec_")) and _is_number(value):
                rows.append({"kind": "run", **base, "variant": "", "metric": metric,
                             "value": float(value)})
        for pairing in summary.get("head_pairings", []):
            variant = f"{pairing['fca_global_head']}/{pairing['fca_local_head']}"
            if pairing.get("default"):
                variant += " (default)"
            for metric in ("gen_balanced_accuracy", "spec_balanced_accuracy"):
                if _is_number(pairing.get(metric)):
                    rows.append({"kind": "head_pairing", **base, "variant": variant,
                                 "metric": metric, "value": float(pairing[metric])})
    for dataset, method in grid.quantize.get("runs", []):
        for label in grid.quantize.get("methods", {}):
            for seed in grid.seeds:
                folder = out / "quantized" / _slug(f"{dataset}__{method}__{label}")
                path = folder / f"seed{seed}" / "summary.json"
                if not path.is_file():
                    continue
                summary = json.loads(path.read_text())
                for metric, value in summary.items():
                    if _is_number(value):
                        rows.append({"kind": "quantized", "dataset": dataset, "method": method,
                                     "seed": seed, "variant": label, "metric": metric,
                                     "value": float(value)})
    columns = ["kind", "dataset", "method", "seed", "variant", "metric", "value"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(columns[:-1], kind="stable").reset_index(drop=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _mean_spread(values: pd.Series) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.3f} (1 seed)"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def paper_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The appendix tables from a results table (:func:`collect`), mean ± sample std over seeds.

    - ``"comparison"``: per dataset and method, generalization and specialization balanced
      accuracy and bAUC.
    - ``"npr_deltas"``: for every method label ``X`` with a ``X+NPR`` counterpart, the change
      NPR brings, paired by seed (only seeds both finished).
    - ``"fca_heads"``: FCA's head pairings.
    - ``"quantized"``: accuracy, balanced accuracy, average bits and compression per
      quantization label.
    Empty tables are left out.
    """
    out: dict[str, pd.DataFrame] = {}
    runs = table[table["kind"] == "run"]
    if not runs.empty:
        shown = runs[runs["metric"].isin(CLASSIFICATION_METRICS)]
        grouped = shown.groupby(["dataset", "method", "metric"], sort=False)["value"]
        summary = grouped.agg(_mean_spread).unstack("metric")
        summary = summary[[m for m in CLASSIFICATION_METRICS if m in summary.columns]]
        summary["seeds"] = runs.groupby(["dataset", "method"], sort=False)["seed"].nunique()
        out["comparison"] = summary.reset_index()
        deltas = []
        for (dataset, method), part in runs.groupby(["dataset", "method"], sort=False):
            if not method.endswith(NPR_SUFFIX):
                continue
            plain = runs[(runs["dataset"] == dataset)
                         & (runs["method"] == method[: -len(NPR_SUFFIX)])]
            if plain.empty:
                continue
            row: dict[str, Any] = {"dataset": dataset, "method": method[: -len(NPR_SUFFIX)]}
            for metric in ("gen_balanced_accuracy", "spec_balanced_accuracy"):
                a = plain[plain["metric"] == metric].set_index("seed")["value"]
                b = part[part["metric"] == metric].set_index("seed")["value"]
                paired = (b - a).dropna()
                row[f"delta_{metric}"] = _mean_spread(paired)
                row["seeds"] = len(paired)
            deltas.append(row)
        if deltas:
            out["npr_deltas"] = pd.DataFrame(deltas)
    heads = table[table["kind"] == "head_pairing"]
    if not heads.empty:
        grouped = heads.groupby(["dataset", "method", "variant", "metric"], sort=False)["value"]
        out["fca_heads"] = grouped.agg(_mean_spread).unstack("metric").reset_index()
    quant = table[table["kind"] == "quantized"]
    if not quant.empty:
        keep = ["accuracy", "balanced_accuracy", "fp32_balanced_accuracy", "average_bits",
                "size_bytes", "compression_ratio"]
        quant = quant[quant["metric"].isin(keep)]
        grouped = quant.groupby(["dataset", "method", "variant", "metric"], sort=False)["value"]
        out["quantized"] = grouped.agg(_mean_spread).unstack("metric").reset_index()
    return out

