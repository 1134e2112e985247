"""Experiment grids: methods x datasets x seeds run through ``fedlib run``, resumable, one table.

A grid is a JSON file (or a dict)::

    {
      "rounds": 10, "seeds": [0, 1, 2],
      "datasets": {
        "SynthDerm sites": {"dataset": "synthderm",
                            "data_options": {"scale": 0.05, "image_size": 28}},
        "SynthBUS lesions": {"dataset": "synthbus_seg", "rounds": 8,
                             "data_options": {"scale": 0.15, "image_size": 32},
                             "methods": {"FedMix": {"set": {"fedmix_beta": 1.5}},
                                         "FedAvg-full": {}}}},
      "methods": {
        "FedAvg-BSM": {"method": "fedavg", "set": {"loss": "bsm"}},
        "FedNPR": {"method": "fednpr"},
        "FedMix": {"method": "fedmix", "data_options": {"supervision": "fedmix"}},
        "FedAvg-full": {"method": "fedavg", "data_options": {"supervision": "full"}}},
      "quantize": {"runs": [["SynthDerm sites", "FedAvg-BSM"]],
                   "methods": {"SDQ 4 bits": {"method": "sdq", "bits": 4}}}
    }

Each (dataset, method) pair is one run folder ``OUT/runs/<dataset>__<method>/`` written by
``fedlib run`` (settings fingerprinted, checkpointed every round, never overwritten), one seed
per cell. A dataset entry may also give ``partition``, ``clients``, ``alpha``,
``imbalance_factor`` and ``local_test`` as in ``fedlib run``; ``rounds`` and ``width`` that
replace the grid's for this dataset (without a ``width`` anywhere, ``fedlib run`` picks the
model's default: 8 for the classifier, 16 for the segmentation U-Net); and ``methods``, the
method labels run on it (a list, or a mapping of label to ``{"set": {...}}`` options added for
this dataset only; by default every method). A method entry's ``data_options`` are added to the
dataset's (e.g. the supervision a segmentation method sees). ``quantize`` applies
``fedlib quantize`` to the final models of the listed runs. :func:`run_grid` skips cells whose
seed already has its ``summary.json`` and resumes an interrupted one from its checkpoint, so a
killed grid rerun with the same command ends with the same table and repeats no finished cell.

:func:`collect` gathers every finished cell into one tidy table (one row per dataset, method,
seed and metric), written as ``OUT/results.csv``; :func:`paper_tables` renders the tables the
book's results appendix shows (mean and spread over seeds): the classification comparison
(generalization and specialization), NPR's plug-in deltas (each method with and without NPR,
paired by seed), FCA's four head pairings, FedMix's Dice comparison (mean and per client), and
accuracy against average bits for quantization. :func:`run_grid` also appends each cell's wall
and CPU time to ``OUT/timing.csv``; :func:`publish` copies the table of a finished grid with a
record of the machine, e.g. ``python -m fedlib.grid publish OUT results/default --grid G.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Grid", "GridError", "collect", "load_grid", "machine_record", "missing_cells",
           "paper_tables", "publish", "run_grid", "sub_grid"]

CLASSIFICATION_METRICS = (
    "gen_balanced_accuracy",
    "gen_bauc",
    "spec_balanced_accuracy",
    "spec_bauc",
)
"""The summary metrics the comparison table shows (mean ± spread over seeds)."""
SEGMENTATION_METRICS = ("gen_dice", "spec_dice")
"""The summary metrics the Dice table shows: the global model's mean Dice over the clients'
test sets, and each client's own model on its own test set (methods with personal models)."""
NPR_SUFFIX = "+NPR"
"""A method label ending in this is the same method with the NPR plug-in (plug-in deltas)."""
PER_CLIENT_SUFFIX = "_per_client"
"""A summary entry ``<metric>_per_client`` (client name -> value) gives ``kind="client"`` rows."""
TIMING_COLUMNS = ("kind", "dataset", "method", "seed", "variant", "started", "wall_s", "cpu_s",
                  "load_1m")
"""Columns of ``OUT/timing.csv``: one row per cell run by :func:`run_grid` (not per skip)."""

_TOP_KEYS = frozenset({"datasets", "methods", "seeds", "rounds", "width", "quantize",
                       "description"})
_DATASET_KEYS = frozenset({"dataset", "data_options", "partition", "clients", "alpha",
                           "imbalance_factor", "local_test", "rounds", "width", "methods"})
_METHOD_KEYS = frozenset({"method", "set", "data_options"})
_QUANTIZE_KEYS = frozenset({"runs", "methods"})
_QUANTIZE_BOOKKEEPING = frozenset({"seed", "client"})
"""Numbers of a quantization summary that name the run, not a result (left out of the table)."""
_RUN_FLAGS = ("partition", "clients", "alpha", "imbalance_factor", "local_test")


class GridError(ValueError):
    """A grid file that cannot be run: the message names the entry and what is wrong."""


@dataclass(frozen=True)
class Grid:
    """A parsed grid (see the module docstring for the file format)."""

    datasets: dict[str, dict[str, Any]]
    methods: dict[str, dict[str, Any]]
    seeds: tuple[int, ...]
    rounds: int
    width: int | None = None
    quantize: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def methods_for(self, dataset: str) -> list[str]:
        """The method labels run on ``dataset``, in the grid's method order."""
        chosen = self.datasets[dataset].get("methods")
        if chosen is None:
            return list(self.methods)
        return [m for m in self.methods if m in chosen]

    def cells(self) -> list[tuple[str, str, int]]:
        """``(dataset label, method label, seed)`` in run order: dataset, then seed, then method
        (so an interrupted grid has every method for the seeds it finished)."""
        return [(d, m, s) for d in self.datasets for s in self.seeds for m in self.methods_for(d)]

    def rounds_for(self, dataset: str) -> int:
        """Communication rounds of the runs on ``dataset``."""
        return int(self.datasets[dataset].get("rounds", self.rounds))

    def width_for(self, dataset: str) -> int | None:
        """Model width of the runs on ``dataset`` (``None``: ``fedlib run``'s default)."""
        width = self.datasets[dataset].get("width", self.width)
        return None if width is None else int(width)

    def method_options(self, dataset: str, method: str) -> dict[str, Any]:
        """The ``--set`` options of ``method`` on ``dataset``: the method's, then the dataset's
        additions for it."""
        chosen = self.datasets[dataset].get("methods")
        extra = chosen.get(method, {}).get("set", {}) if isinstance(chosen, Mapping) else {}
        return {**self.methods[method].get("set", {}), **extra}

    def data_options(self, dataset: str, method: str) -> dict[str, Any]:
        """The ``--data-option`` values of ``method`` on ``dataset``: the dataset's, then the
        method's."""
        return {**self.datasets[dataset].get("data_options", {}),
                **self.methods[method].get("data_options", {})}


def _slug(label: str) -> str:
    """A folder name for a label: letters, digits, '-', '+', '.', '_' kept; others '_'."""
    return re.sub(r"[^A-Za-z0-9+._-]+", "_", label).strip("_") or "x"


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_entry(kind: str, label: str, entry: Any, name_key: str, known: frozenset) -> None:
    if not isinstance(entry, Mapping) or name_key not in entry:
        raise GridError(f"load_grid: {kind} {label!r} needs a {name_key!r} name, got {entry!r}.")
    unknown = sorted(set(entry) - known)
    if unknown:
        raise GridError(f"load_grid: {kind} {label!r} has unknown key(s) {unknown}; known keys: "
                        f"{sorted(known)}.")
    for key in ("set", "data_options"):
        if key in entry and not isinstance(entry[key], Mapping):
            raise GridError(f"load_grid: {kind} {label!r}: {key!r} must be a mapping of option "
                            f"to value, got {entry[key]!r}.")


def _check_dataset_methods(label: str, chosen: Any, methods: Mapping[str, Any]) -> None:
    if not isinstance(chosen, list | Mapping) or not chosen:
        raise GridError(f"load_grid: dataset {label!r}: 'methods' must be a non-empty list of "
                        f"method labels or a mapping of label to {{'set': {{...}}}}, got "
                        f"{chosen!r}.")
    missing = [m for m in chosen if m not in methods]
    if missing:
        raise GridError(f"load_grid: dataset {label!r} names method(s) {missing} that the grid's "
                        f"'methods' do not define; defined: {sorted(methods)}.")
    if isinstance(chosen, Mapping):
        for method, extra in chosen.items():
            if not isinstance(extra, Mapping) or set(extra) - {"set"} or not isinstance(
                    extra.get("set", {}), Mapping):
                raise GridError(f"load_grid: dataset {label!r}, method {method!r}: expected "
                                f"{{}} or {{'set': {{option: value}}}}, got {extra!r}.")


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
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise GridError(f"load_grid: unknown key(s) {unknown}; known keys: {sorted(_TOP_KEYS)}.")
    for key in ("datasets", "methods"):
        if not isinstance(raw.get(key), Mapping) or not raw[key]:
            raise GridError(f"load_grid: {key!r} must be a non-empty mapping of label to entry.")
    for label, entry in raw["methods"].items():
        _check_entry("method", label, entry, "method", _METHOD_KEYS)
    for label, entry in raw["datasets"].items():
        _check_entry("dataset", label, entry, "dataset", _DATASET_KEYS)
        if "methods" in entry:
            _check_dataset_methods(label, entry["methods"], raw["methods"])
        for key in ("rounds", "width"):
            if key in entry and not _is_int(entry[key], 1):
                raise GridError(f"load_grid: dataset {label!r}: {key!r} must be an int >= 1, got "
                                f"{entry[key]!r}.")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s, 0) for s in seeds):
        raise GridError(f"load_grid: 'seeds' must be a non-empty list of ints >= 0, got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise GridError(f"load_grid: 'seeds' must be distinct, got {seeds!r}.")
    rounds = raw.get("rounds", 10)
    if not _is_int(rounds, 1):
        raise GridError(f"load_grid: 'rounds' must be an int >= 1, got {rounds!r}.")
    width = raw.get("width")
    if width is not None and not _is_int(width, 1):
        raise GridError(f"load_grid: 'width' must be an int >= 1, got {width!r}.")
    grid = Grid(
        datasets={k: dict(v) for k, v in raw["datasets"].items()},
        methods={k: dict(v) for k, v in raw["methods"].items()},
        seeds=tuple(seeds),
        rounds=rounds,
        width=width,
        quantize=dict(raw.get("quantize") or {}),
        description=str(raw.get("description", "")),
    )
    pairs = [(d, m) for d in grid.datasets for m in grid.methods_for(d)]
    slugs = [_slug(f"{d}__{m}") for d, m in pairs]
    if len(set(slugs)) != len(slugs):
        raise GridError("load_grid: two labels map to the same folder name; rename one.")
    unknown = sorted(set(grid.quantize) - _QUANTIZE_KEYS)
    if unknown:
        raise GridError(f"load_grid: 'quantize' has unknown key(s) {unknown}; known keys: "
                        f"{sorted(_QUANTIZE_KEYS)}.")
    for pair in grid.quantize.get("runs", []):
        if not isinstance(pair, list | tuple) or len(pair) != 2 or tuple(pair) not in pairs:
            raise GridError(
                f"load_grid: quantize run {pair!r} must be [dataset label, method label] of "
                "a (dataset, method) pair this grid runs."
            )
    for label, spec in grid.quantize.get("methods", {}).items():
        if not isinstance(spec, Mapping):
            raise GridError(f"load_grid: quantize method {label!r} must be a mapping of "
                            f"`fedlib quantize` option to value, got {spec!r}.")
    return grid


def sub_grid(
    grid: Grid,
    *,
    datasets: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    quantize: bool = True,
) -> Grid:
    """A part of ``grid`` with the same entries: the cells of the chosen datasets, methods and
    seeds (``None``: all), and the quantizations of the runs kept (none if ``quantize=False``).

    Its cells are run exactly as in the whole grid, e.g. to regenerate one row of a table."""
    def pick(kind: str, chosen: Iterable[Any] | None, known: Sequence[Any]) -> list[Any]:
        if chosen is None:
            return list(known)
        missing = [c for c in chosen if c not in known]
        if missing:
            raise GridError(f"sub_grid: {kind} {missing} not in the grid; known: {list(known)}.")
        return [k for k in known if k in chosen]

    keep_d = pick("dataset(s)", datasets, list(grid.datasets))
    keep_m = pick("method(s)", methods, list(grid.methods))
    keep_s = pick("seed(s)", seeds, list(grid.seeds))
    if not keep_s:
        raise GridError("sub_grid: choose at least one seed.")
    new_datasets = {}
    for d in keep_d:
        entry = dict(grid.datasets[d])
        chosen = entry.get("methods")
        if isinstance(chosen, Mapping):
            entry["methods"] = {m: v for m, v in chosen.items() if m in keep_m}
        elif chosen is not None:
            entry["methods"] = [m for m in chosen if m in keep_m]
        new_datasets[d] = entry
    part = dataclasses.replace(
        grid, datasets=new_datasets, methods={m: grid.methods[m] for m in keep_m},
        seeds=tuple(keep_s), quantize={})
    pairs = {(d, m) for d, m, _ in part.cells()}
    if not pairs:
        raise GridError("sub_grid: the chosen datasets and methods share no cell of the grid.")
    if quantize and grid.quantize:
        runs = [pair for pair in grid.quantize.get("runs", []) if tuple(pair) in pairs]
        if runs:
            part = dataclasses.replace(part, quantize={**grid.quantize, "runs": runs})
    return part


def run_dir(out: Path, dataset: str, method: str) -> Path:
    """The ``fedlib run`` folder of a (dataset, method) pair."""
    return Path(out) / "runs" / _slug(f"{dataset}__{method}")


def quantized_dir(out: Path, dataset: str, method: str, label: str) -> Path:
    """The folder of a quantization label applied to a (dataset, method) pair (seedN inside)."""
    return Path(out) / "quantized" / _slug(f"{dataset}__{method}__{label}")


def _run_argv(grid: Grid, out: Path, dataset: str, method: str, seed: int) -> list[str]:
    data, spec = grid.datasets[dataset], grid.methods[method]
    argv = ["run", "--method", spec["method"], "--dataset", str(data["dataset"]),
            "--rounds", str(grid.rounds_for(dataset)), "--seeds", str(seed),
            "--out", str(run_dir(out, dataset, method)), "--no-progress"]
    width = grid.width_for(dataset)
    if width is not None:
        argv += ["--width", str(width)]
    for key, value in grid.method_options(dataset, method).items():
        argv += ["--set", f"{key}={_cli_value(value)}"]
    for key, value in grid.data_options(dataset, method).items():
        argv += ["--data-option", f"{key}={_cli_value(value)}"]
    for key in _RUN_FLAGS:
        if key in data:
            argv += ["--" + key.replace("_", "-"), str(data[key])]
    return argv


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


class _CellClock:
    """Wall and CPU seconds of one cell (this process and its finished children) and the
    1-minute load average when it started, appended to ``OUT/timing.csv``."""

    def __init__(self, path: Path, kind: str, dataset: str, method: str, seed: int,
                 variant: str = ""):
        self.path, self.key = path, (kind, dataset, method, seed, variant)

    def __enter__(self) -> _CellClock:
        self.started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        self.times = os.times()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return
        end = os.times()
        cpu = sum(end[i] - self.times[i] for i in range(4))
        wall = end.elapsed - self.times.elapsed
        new = not self.path.is_file()
        with self.path.open("a", newline="") as stream:
            writer = csv.writer(stream)
            if new:
                writer.writerow(TIMING_COLUMNS)
            writer.writerow([*self.key, self.started, f"{wall:.3f}", f"{cpu:.3f}",
                             f"{self.load:.2f}"])


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
    folders refuse settings that differ from the ones they were started with. Each cell run
    appends its wall and CPU seconds to ``OUT/timing.csv`` (:data:`TIMING_COLUMNS`).
    """
    grid = source if isinstance(source, Grid) else load_grid(source)
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    timing = out / "timing.csv"
    cells = grid.cells()
    for i, (dataset, method, seed) in enumerate(cells, start=1):
        folder = run_dir(out, dataset, method)
        if (folder / f"seed{seed}" / "summary.json").is_file():
            log(f"[{i}/{len(cells)}] {dataset} / {method} / seed {seed}: done earlier, skipped")
            continue
        log(f"[{i}/{len(cells)}] {dataset} / {method} / seed {seed}")
        argv = _run_argv(grid, out, dataset, method, seed)
        with _CellClock(timing, "run", dataset, method, seed):
            run(argv + (["--resume"] if folder.exists() else []))
    for dataset, method in grid.quantize.get("runs", []):
        for label, spec in grid.quantize.get("methods", {}).items():
            for seed in grid.seeds:
                target = quantized_dir(out, dataset, method, label) / f"seed{seed}"
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
                with _CellClock(timing, "quantized", dataset, method, seed, label):
                    run(argv)
    table = collect(grid, out)
    table.to_csv(out / "results.csv", index=False)
    return table


def collect(source: str | Path | Mapping[str, Any] | Grid, out: str | Path) -> pd.DataFrame:
    """The tidy results table of a grid's finished cells.

    Columns: ``kind``, ``dataset``, ``method``, ``seed``, ``variant``, ``metric`` and
    ``value``. ``kind`` is "run" (a summary's ``gen_*``/``spec_*`` numbers: balanced accuracy,
    bAUC, Dice, ...), "client" (a summary's ``<metric>_per_client`` entries, the client's name
    in ``variant``, e.g. FedMix's Dice per client), "head_pairing" (FCA's four pairings,
    ``variant`` = "global head/local head") or "quantized" (``variant`` = quantization label;
    every number of the quantization's summary but the run's seed and client);
    ``variant`` is "" for runs. Rows are sorted, so equal results give byte-identical CSV files.
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
            if not metric.startswith(("gen_", "spec_")):
                continue
            if _is_number(value):
                rows.append({"kind": "run", **base, "variant": "", "metric": metric,
                             "value": float(value)})
            elif metric.endswith(PER_CLIENT_SUFFIX) and isinstance(value, Mapping):
                for client, score in value.items():
                    if _is_number(score):
                        rows.append({"kind": "client", **base, "variant": str(client),
                                     "metric": metric[: -len(PER_CLIENT_SUFFIX)],
                                     "value": float(score)})
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
                path = quantized_dir(out, dataset, method, label) / f"seed{seed}" / "summary.json"
                if not path.is_file():
                    continue
                summary = json.loads(path.read_text())
                for metric, value in summary.items():
                    if _is_number(value) and metric not in _QUANTIZE_BOOKKEEPING:
                        rows.append({"kind": "quantized", "dataset": dataset, "method": method,
                                     "seed": seed, "variant": label, "metric": metric,
                                     "value": float(value)})
    columns = ["kind", "dataset", "method", "seed", "variant", "metric", "value"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(columns[:-1], kind="stable").reset_index(drop=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _mean_spread(values: pd.Series, *, signed: bool = False) -> str:
    """``"0.412 ± 0.013"`` (mean ± sample std), ``"0.412 (1 seed)"``, or "n/a" for none;
    ``signed=True`` writes the mean's sign, for differences."""
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return "n/a"
    mean = f"{round(v.mean(), 3) + 0.0:+.3f}" if signed else f"{v.mean():.3f}"
    if len(v) == 1:
        return f"{mean} (1 seed)"
    return f"{mean} ± {v.std(ddof=1):.3f}"


def _summarize(part: pd.DataFrame, keys: list[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean ± spread of each metric per ``keys`` group, metrics as columns in the given order,
    plus the number of seeds."""
    shown = part[part["metric"].isin(metrics)]
    grouped = shown.groupby([*keys, "metric"], sort=False)["value"]
    summary = grouped.agg(_mean_spread).unstack("metric")
    summary = summary[[m for m in metrics if m in summary.columns]].fillna("n/a")
    summary.columns.name = None
    summary["seeds"] = shown.groupby(keys, sort=False)["seed"].nunique()
    return summary.reset_index()


def _in_grid_order(frame: pd.DataFrame, grid: Grid | None) -> pd.DataFrame:
    if grid is None or frame.empty:
        return frame
    rank = {"dataset": list(grid.datasets), "method": list(grid.methods),
            "variant": list(grid.quantize.get("methods", {}))}
    keys = []
    for column, order in rank.items():
        if column in frame.columns:
            position = {label: i for i, label in enumerate(order)}
            keys.append(frame[column].map(lambda x, p=position: p.get(x, len(p))))
    if not keys:
        return frame
    order = pd.concat(keys, axis=1).apply(tuple, axis=1)
    return frame.loc[order.sort_values(kind="stable").index].reset_index(drop=True)


def paper_tables(
    table: pd.DataFrame, grid: str | Path | Mapping[str, Any] | Grid | None = None
) -> dict[str, pd.DataFrame]:
    """The appendix tables from a results table (:func:`collect`), mean ± sample std over seeds.

    - ``"comparison"``: per dataset and method, generalization and specialization balanced
      accuracy and bAUC (classification runs).
    - ``"npr_deltas"``: for every method label ``X`` with a ``X+NPR`` counterpart, the change
      NPR brings, paired by seed (only seeds both finished).
    - ``"fca_heads"``: FCA's head pairings.
    - ``"segmentation"``: per dataset and method, the mean test Dice of the global model
      (``gen_dice``) and of each client's own model (``spec_dice``, methods with personal
      models such as local training).
    - ``"segmentation_clients"``: the same per client (``client`` column).
    - ``"quantized"``: accuracy and balanced accuracy on the pooled test set (the float32
      model's too), balanced accuracy on the quantizing client's own test split when one client
      quantized, average bits, size and compression per quantization label.

    A metric a method does not report reads "n/a". Empty tables are left out. With ``grid``,
    rows follow the grid's order of datasets, methods and quantization labels; without, the
    table's (sorted) order.
    """
    if grid is not None and not isinstance(grid, Grid):
        grid = load_grid(grid)
    out: dict[str, pd.DataFrame] = {}
    runs = table[table["kind"] == "run"]
    classification = runs[runs["metric"].isin(CLASSIFICATION_METRICS)]
    if not classification.empty:
        out["comparison"] = _summarize(classification, ["dataset", "method"],
                                       CLASSIFICATION_METRICS)
        deltas = []
        for (dataset, method), part in classification.groupby(["dataset", "method"], sort=False):
            if not method.endswith(NPR_SUFFIX):
                continue
            plain = classification[(classification["dataset"] == dataset)
                                   & (classification["method"] == method[: -len(NPR_SUFFIX)])]
            if plain.empty:
                continue
            row: dict[str, Any] = {"dataset": dataset, "method": method[: -len(NPR_SUFFIX)]}
            for metric in ("gen_balanced_accuracy", "spec_balanced_accuracy"):
                a = plain[plain["metric"] == metric].set_index("seed")["value"]
                b = part[part["metric"] == metric].set_index("seed")["value"]
                paired = (b - a).dropna()
                row[f"delta_{metric}"] = _mean_spread(paired, signed=True)
                seeds = len(paired)
            deltas.append({**row, "seeds": seeds})
        if deltas:
            out["npr_deltas"] = pd.DataFrame(deltas)
    heads = table[table["kind"] == "head_pairing"]
    if not heads.empty:
        grouped = heads.groupby(["dataset", "method", "variant", "metric"], sort=False)["value"]
        frame = grouped.agg(_mean_spread).unstack("metric").fillna("n/a").reset_index()
        frame.columns.name = None
        out["fca_heads"] = frame
    dice = runs[runs["metric"].isin(SEGMENTATION_METRICS)]
    if not dice.empty:
        out["segmentation"] = _summarize(dice, ["dataset", "method"], SEGMENTATION_METRICS)
        clients = table[(table["kind"] == "client")
                        & table["metric"].isin(SEGMENTATION_METRICS)]
        if not clients.empty:
            frame = _summarize(clients.rename(columns={"variant": "client"}),
                               ["dataset", "method", "client"], SEGMENTATION_METRICS)
            out["segmentation_clients"] = frame
    quant = table[table["kind"] == "quantized"]
    if not quant.empty:
        keep = ["accuracy", "balanced_accuracy", "fp32_balanced_accuracy",
                "client_balanced_accuracy", "average_bits", "size_bytes", "compression_ratio"]
        quant = quant[quant["metric"].isin(keep)]
        grouped = quant.groupby(["dataset", "method", "variant", "metric"], sort=False)["value"]
        frame = grouped.agg(_mean_spread).unstack("metric").fillna("n/a").reset_index()
        frame.columns.name = None
        out["quantized"] = frame[[c for c in ["dataset", "method", "variant", *keep]
                                  if c in frame.columns]]
    return {name: _in_grid_order(frame, grid) for name, frame in out.items()}


def missing_cells(grid: Grid, table: pd.DataFrame) -> list[tuple[str, str, int, str]]:
    """``(dataset, method, seed, variant)`` of the grid's cells and quantizations that have no
    row in ``table`` (``variant`` "" for runs)."""
    have = {(r.dataset, r.method, int(r.seed), "" if r.kind != "quantized" else r.variant)
            for r in table[table["kind"].isin(["run", "quantized"])].itertuples()}
    wanted = [(d, m, s, "") for d, m, s in grid.cells()]
    wanted += [(d, m, s, label) for d, m in grid.quantize.get("runs", [])
               for label in grid.quantize.get("methods", {}) for s in grid.seeds]
    return [cell for cell in wanted if cell not in have]


def machine_record() -> dict[str, Any]:
    """The machine and software a grid ran on: CPU model and count, memory, OS, Python, torch,
    NumPy and fedlib versions, torch threads and ``OMP_NUM_THREADS``."""
    import numpy
    import torch

    import fedlib

    cpu_model = platform.processor() or platform.machine()
    memory_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    return {
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "memory_gib": memory_gib,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "fedlib": fedlib.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def publish(out: str | Path, dest: str | Path, grid: str | Path | Grid,
            *, command: str | None = None) -> dict[str, Any]:
    """Copy a finished grid's ``results.csv`` to ``dest`` with ``dest/machine.json``.

    ``machine.json`` holds :func:`machine_record`, the grid file's name, the command, the
    date of the first and last cell, the number of cells, the summed wall and CPU seconds of the
    cells (from ``OUT/timing.csv``: the cells run since the grid folder was made, so a resumed
    grid counts each cell once, an interrupted cell's lost time aside), the largest wall time of
    one cell per dataset and the 1-minute load average at the cells' starts (mean and max), since
    a shared machine makes every time longer. Refuses a grid with missing cells.
    """
    label = str(grid) if not isinstance(grid, Grid) else ""
    grid = grid if isinstance(grid, Grid) else load_grid(grid)
    out, dest = Path(out), Path(dest)
    table = collect(grid, out)
    missing = missing_cells(grid, table)
    if missing:
        shown = ", ".join(" / ".join(str(x) for x in cell if x != "") for cell in missing[:5])
        raise GridError(f"publish: {len(missing)} cell(s) of the grid are not finished in {out} "
                        f"(e.g. {shown}); run the grid to the end first.")
    timing_path = out / "timing.csv"
    if not timing_path.is_file():
        raise GridError(f"publish: no {timing_path}; run the grid with run_grid / fedlib grid.")
    timing = pd.read_csv(timing_path, keep_default_na=False)
    timing = timing.drop_duplicates(["kind", "dataset", "method", "seed", "variant"], keep="last")
    runs = timing[timing["kind"] == "run"]
    record = {
        "grid": Path(label).name if label else None,
        "command": command,
        "machine": machine_record(),
        "first_cell_started": str(timing["started"].min()),
        "last_cell_started": str(timing["started"].max()),
        "cells": {"runs": int(len(runs)), "quantizations": int(len(timing) - len(runs))},
        "wall_s": round(float(timing["wall_s"].sum()), 1),
        "cpu_s": round(float(timing["cpu_s"].sum()), 1),
        "wall_s_by_kind": {k: round(float(v), 1)
                           for k, v in timing.groupby("kind")["wall_s"].sum().items()},
        "cpu_s_per_cell_by_dataset": {
            f"{kind}: {dataset}": {"median": round(float(part["cpu_s"].median()), 2),
                                   "max": round(float(part["cpu_s"].max()), 2)}
            for (kind, dataset), part in timing.groupby(["kind", "dataset"], sort=False)},
        "cpu_s_per_cell_by_method": {
            f"{dataset} / {method}": round(float(part["cpu_s"].median()), 2)
            for (dataset, method), part in runs.groupby(["dataset", "method"], sort=False)},
        "load_1m_at_cell_start": {"mean": round(float(timing["load_1m"].mean()), 2),
                                  "max": round(float(timing["load_1m"].max()), 2)},
        "rows": int(len(table)),
    }
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "results.csv", dest / "results.csv")
    (dest / "machine.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fedlib.grid publish OUT DEST --grid GRID.json`` (see :func:`publish`)."""
    parser = argparse.ArgumentParser(prog="python -m fedlib.grid")
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="copy a finished grid's results.csv with a record of "
                                          "the machine (machine.json) to DEST")
    pub.add_argument("out", help="the grid folder given to `fedlib grid --out`")
    pub.add_argument("dest", help="folder for results.csv and machine.json")
    pub.add_argument("--grid", required=True, help="the grid file the folder was run with")
    args = parser.parse_args(argv)
    try:
        record = publish(args.out, args.dest, args.grid,
                         command=f"python -m fedlib grid {args.grid} --out OUT")
    except GridError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({k: record[k] for k in ("cells", "wall_s", "cpu_s",
                                             "load_1m_at_cell_start")}, indent=2))
    print(f"-> {Path(args.dest) / 'results.csv'}, {Path(args.dest) / 'machine.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
