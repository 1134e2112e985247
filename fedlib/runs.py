"""Run folders written by ``python -m fedlib run``: their format, fingerprints and reading back.

Layout of ``--out RUN_DIR``::

    RUN_DIR/
      run.json            format, the settings shared by every seed, their fingerprint, the seeds
      seedN/
        config.json       everything needed to rebuild the model and the dataset (below)
        checkpoint.pt     the full state after the latest checkpointed round (weights-only
                          torch file), for --resume: written every --checkpoint-every N rounds
                          and after the last; absent with N = 0
        history.csv       one row per round;  clients.csv: one row per (round, client)
        simulation.json   the simulator's settings and data fingerprint (Simulation.describe)
        model.pt          final global model: torch.save(state_dict), read with weights_only=True
        summary.json      final generalization (gen_*) and specialization (spec_*) metrics;
                          written last, so its presence marks a finished seed
        timing.json       wall-clock seconds of the seed's last (possibly resumed) session

``seedN/config.json`` (format 1) holds:

- ``seed``; ``method``: ``{"name", "params"}`` (``fedlib.methods.get_method(name, **params)``);
- ``dataset``: ``{"name", "partition", "num_clients", "alpha", "imbalance_factor",
  "local_test", "options", "root"}``; ``fedlib.data.load_dataset(name, seed=seed, root=root,
  partition=..., ..., **options)`` rebuilds the data (``name`` may be a registry name,
  ``medmnist:<name>`` or a ``.npz`` path);
- ``task``: "classification" or "segmentation" (the method registry and metrics it uses);
- ``model``: ``{"name", "kwargs"}``, a class of :mod:`fedlib.models` built as
  ``name(**kwargs)`` and wrapped by the method's ``prepare_model``; ``model.pt`` is that
  wrapped model's state dict;
- ``simulation``: ``{"num_rounds", "fraction", "eval_every"}``;
- ``settings``: the seed-independent settings above, ``settings_fingerprint`` (their sha256),
  ``dataset_fingerprint`` (:meth:`fedlib.data.FederatedDataset.fingerprint`) and
  ``fingerprint`` (sha256 of both and the seed): a resumed seed must match all three.

:func:`load_run` rebuilds ``(model, dataset, config)`` from these files. JSON files never hold a
bare ``NaN``: non-finite numbers are written as ``null``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedlib._atomic import atomic_write_text

__all__ = [
    "RUN_FORMAT",
    "RunError",
    "build_dataset",
    "build_method",
    "build_model",
    "differences",
    "load_run",
    "read_json",
    "report_table",
    "seed_dirs",
    "sha256_of",
    "to_json",
    "write_json",
]

RUN_FORMAT = 1
SUMMARY_METRICS = ("gen_balanced_accuracy", "gen_bauc", "gen_accuracy", "spec_balanced_accuracy",
                   "gen_dice", "spec_dice")
"""The metrics ``report`` shows by default (those present in the summaries)."""


class RunError(ValueError):
    """A run folder is missing, damaged or inconsistent (the message says which file)."""


# --------------------------------------------------------------------------- JSON
def to_json(value: Any) -> Any:
    """``value`` as plain JSON types; NaN and infinities become ``None`` (JSON ``null``)."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_json(value.tolist())
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``to_json(value)`` atomically (strict JSON: ``allow_nan=False``)."""
    return atomic_write_text(path, json.dumps(to_json(value), indent=2, allow_nan=False) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object; an absent, empty, truncated or non-object file raises
    :class:`RunError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} does not exist.")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise RunError(f"{path} is empty (the run that wrote it was interrupted?).")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); the file "
                       "is incomplete or was edited by hand.") from exc
    if not isinstance(value, dict):
        raise RunError(f"{path} must hold a JSON object, found {type(value).__name__}.")
    return value


def sha256_of(value: Any) -> str:
    """The sha256 hex digest of ``value``'s canonical JSON (sorted keys, no NaN)."""
    text = json.dumps(to_json(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for every leaf where two JSON-like values differ."""
    old, new = to_json(old), to_json(new)
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else key
            if key not in old:
                out.append(f"{name}: absent -> {new[key]!r}")
            elif key not in new:
                out.append(f"{name}: {old[key]!r} -> absent")
            else:
                out.extend(differences(old[key], new[key], name))
        return out
    return [] if old == new else [f"{prefix or 'value'}: {old!r} -> {new!r}"]


# --------------------------------------------------------------------------- rebuilding
def seed_dirs(run_dir: str | Path) -> dict[int, Path]:
    """``{seed: folder}`` for the ``seedN`` folders of a run folder."""
    out = {}
    for path in Path(run_dir).glob("seed*"):
        suffix = path.name[4:]
        if path.is_dir() and suffix.isdigit():
            out[int(suffix)] = path
    return dict(sorted(out.items()))


def build_method(config: Mapping[str, Any]):
    """The method of a seed's ``config.json`` (lists turned back into tuples)."""
    import dataclasses

    from fedlib.methods import METHODS, get_method

    name = config["method"]["name"]
    if config.get("task") == "segmentation":
        from fedlib.segmentation import SEGMENTATION_METHODS, get_segmentation_method

        METHODS, get_method = SEGMENTATION_METHODS, get_segmentation_method  # noqa: N806
    if name not in METHODS:
        raise RunError(f"unknown method {name!r} in the run's config.json.")
    params = dict(config["method"]["params"])
    tuple_fields = {
        f.name for f in dataclasses.fields(METHODS[name])
        if isinstance(f.default, tuple) or f.type in ("tuple", "tuple[int, ...]")
    }
    for key, value in params.items():
        if isinstance(value, list) and key in tuple_fields:
            params[key] = tuple(value)
    return get_method(name, **params)


def build_model(config: Mapping[str, Any], method=None) -> torch.nn.Module:
    """A fresh model of a seed's ``config.json``, wrapped by the method's ``prepare_model``."""
    import fedlib.models

    spec = config["model"]
    cls = getattr(fedlib.models, spec["name"], None)
    if cls is None:
        raise RunError(f"unknown model {spec['name']!r} in the run's config.json.")
    model = cls(**spec["kwargs"])
    method = method if method is not None else build_method(config)
    return method.prepare_model(model)


def build_dataset(config: Mapping[str, Any], *, root: str | None = None):
    """The federated dataset of a seed's ``config.json`` (``root`` overrides the data root)."""
    from fedlib.data.registry import load_dataset

    spec = config["dataset"]
    return load_dataset(
        spec["name"],
        partition=spec["partition"],
        num_clients=spec["num_clients"],
        alpha=spec["alpha"],
        imbalance_factor=spec["imbalance_factor"],
        local_test=spec.get("local_test", "split"),
        seed=int(config["seed"]),
        root=root if root is not None else spec.get("root"),
        **spec.get("options", {}),
    )


def load_run(
    run_dir: str | Path, seed: int, *, root: str | None = None, check_data: bool = True
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The final global model, the dataset and the config of one seed of a finished run.

    Parameters
    ----------
    run_dir : path
        A folder written by ``python -m fedlib run --out``.
    seed : int
        Which ``seedN`` folder.
    root : str, optional
        Data root, if the data moved since the run.
    check_data : bool, default True
        Refuse a dataset whose fingerprint differs from the one recorded (the data changed).

    Returns
    -------
    (model, dataset, config)
        ``model`` in eval mode with the weights of ``seedN/model.pt`` (read weights-only);
        ``dataset`` a :class:`~fedlib.data.FederatedDataset`; ``config`` the parsed
        ``seedN/config.json``.
    """
    from fedlib.core.checkpoint import load_weights

    folder = Path(run_dir) / f"seed{int(seed)}"
    if not folder.is_dir():
        found = ", ".join(f"seed{s}" for s in seed_dirs(run_dir)) or "none"
        raise RunError(f"load_run: no folder seed{seed} in {run_dir} (found: {found}).")
    config = read_json(folder / "config.json")
    if config.get("format") != RUN_FORMAT:
        raise RunError(f"load_run: {folder / 'config.json'} has format {config.get('format')!r}, "
                       f"this fedlib reads format {RUN_FORMAT}.")
    weights_path = folder / "model.pt"
    if not weights_path.is_file():
        raise RunError(f"load_run: {weights_path} does not exist: seed {seed} did not finish "
                       "(continue it with `fedlib run ... --resume`).")
    dataset = build_dataset(config, root=root)
    if check_data and dataset.fingerprint() != config.get("dataset_fingerprint"):
        raise RunError(f"load_run: the data rebuilt from {folder / 'config.json'} differs from "
                       "the data of the run (dataset fingerprint changed); pass "
                       "check_data=False to load it anyway.")
    model = build_model(config)
    model.load_state_dict(load_weights(weights_path))
    model.eval()
    return model, dataset, config


# --------------------------------------------------------------------------- report
def _summary_identity(summary: Mapping[str, Any]) -> str:
    """What must agree between the seeds pooled in one row."""
    if "settings_fingerprint" in summary:
        return str(summary["settings_fingerprint"])
    legacy = {k: summary.get(k) for k in ("method", "dataset", "partition", "rounds", "options")}
    return sha256_of(legacy)


def _format_spread(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "n/a"
    if finite.size == 1:
        return f"{finite[0]:.3f} (1 seed: no spread)"
    return f"{finite.mean():.3f} ± {finite.std(ddof=1):.3f}"


def report_table(
    dirs: list[Path], metrics: tuple[str, ...] | list[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Mean ± std over the seeds of each run folder, and notes on missing seeds.

    A row pools the finished seeds (``seedN/summary.json``) of one folder; it refuses seeds run
    with different settings (another method, other data options, ...), naming the seeds and what
    differs. The spread is the sample standard deviation over seeds (``ddof=1``, as in
    :mod:`fedlib.report`); one seed is shown as
    ``"x (1 seed: no spread)"``. Seeds the run asked for (``run.json``) without a summary are
    listed in ``missing`` and in the notes.

    Raises
    ------
    RunError
        No finished seed, a damaged summary, mixed settings, or a metric that no summary has.
    """
    rows, notes = [], []
    table_metrics: list[str] | None = list(metrics) if metrics else None
    for directory in dirs:
        directory = Path(directory)
        if not directory.is_dir():
            raise RunError(f"{directory} is not a folder.")
        folders = seed_dirs(directory)
        finished = {s: f / "summary.json" for s, f in folders.items()
                    if (f / "summary.json").exists()}
        if not finished:
            raise RunError(f"no seed*/summary.json under {directory}.")
        runs = {s: read_json(path) for s, path in finished.items()}
        identities = {s: _summary_identity(r) for s, r in runs.items()}
        if len(set(identities.values())) > 1:
            first = min(runs)
            other = next(s for s in runs if identities[s] != identities[first])
            what = _settings_difference(folders[first], folders[other], runs[first], runs[other])
            raise RunError(
                f"{directory}: seeds {first} and {other} were run with different settings "
                f"({what}); report pools only seeds of one experiment: move them apart."
            )
        requested = list(finished)
        if (directory / "run.json").is_file():
            requested = [int(s) for s in read_json(directory / "run.json").get("seeds", [])]
        missing = sorted(set(requested) - set(finished))
        if missing:
            notes.append(f"{directory.name}: seed(s) {', '.join(map(str, missing))} missing "
                         f"(asked for {len(set(requested) | set(finished))}, "
                         f"{len(finished)} finished).")
        if table_metrics is None:
            present = set().union(*[r.keys() for r in runs.values()])
            table_metrics = [m for m in SUMMARY_METRICS if m in present] or sorted(
                k for k in present if k.startswith(("gen_", "spec_")) and not k.endswith("_std")
            )
        for metric in table_metrics:
            if not any(metric in r for r in runs.values()):
                available = sorted(k for k, v in next(iter(runs.values())).items()
                                   if isinstance(v, int | float) or v is None)
                raise RunError(f"no metric {metric!r} in the summaries of {directory}; "
                               f"available: {', '.join(available)}.")
        first_run = runs[min(runs)]
        row: dict[str, Any] = {
            "run": directory.name,
            "method": first_run.get("method", "?"),
            "seeds": len(runs),
            "missing": ", ".join(map(str, missing)) or "-",
        }
        for metric in table_metrics:
            values = np.array(
                [np.nan if r.get(metric) is None else float(r[metric]) for r in runs.values()]
            )
            row[metric] = _format_spread(values)
        rows.append(row)
    return pd.DataFrame(rows), notes


def _settings_difference(folder_a: Path, folder_b: Path, a: Mapping, b: Mapping) -> str:
    try:
        diff = differences(read_json(folder_a / "config.json").get("settings", {}),
                           read_json(folder_b / "config.json").get("settings", {}))
    except RunError:
        diff = []
    if not diff:
        diff = differences({k: a.get(k) for k in ("method", "options", "rounds")},
                           {k: b.get(k) for k in ("method", "options", "rounds")})
    return "; ".join(diff[:4]) or "their fingerprints differ"
