"""Command line: ``python -m fedlib run | methods | datasets | report``.

Examples
--------
Three seeds of FedProx on SynthDerm's six sites::

    python -m fedlib run --method fedprox --set mu=0.1 --dataset synthderm --rounds 20 \
        --seeds 0 1 2 --out runs/fedprox

A Dirichlet long-tail split, then the mean and spread table::

    python -m fedlib run --method fedavg --set loss=bsm --dataset synthderm \
        --partition dirichlet --alpha 0.5 --imbalance-factor 50 --clients 10 --out runs/bsm
    python -m fedlib report runs/fedprox runs/bsm
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SUMMARY_METRICS = ("gen_balanced_accuracy", "gen_bauc", "gen_accuracy", "spec_balanced_accuracy")


# --------------------------------------------------------------------------- option parsing
def parse_value(text: str, default: Any) -> Any:
    """Parse ``text`` to the type of ``default`` (bool, int, float, tuple, or inferred)."""
    lowered = text.strip().lower()
    if isinstance(default, bool):
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, tuple):
        items = [t for t in text.split(",") if t.strip()]
        sample = default[0] if default else 0
        return tuple(parse_value(t, sample) if default else _infer(t) for t in items)
    return _infer(text)


def _infer(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def method_options(name: str) -> dict[str, Any]:
    """The options of a method with their defaults."""
    from fedlib.methods import METHODS

    cls = METHODS[name]
    return {f.name: _field_default(f) for f in dataclasses.fields(cls)}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def parse_settings(pairs: list[str], method: str) -> dict[str, Any]:
    """``["mu=0.1", "loss=bsm"]`` to typed keyword arguments, naming unknown options."""
    options = method_options(method)
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"fedlib run: --set expects KEY=VALUE, got {pair!r}.")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in options:
            raise SystemExit(
                f"fedlib run: method {method!r} has no option {key!r}; valid options: "
                f"{', '.join(sorted(options))}."
            )
        try:
            out[key] = parse_value(value, options[key])
        except ValueError as exc:
            raise SystemExit(f"fedlib run: option {key!r}: {exc}.") from exc
    return out


# --------------------------------------------------------------------------- commands
def cmd_methods(args: argparse.Namespace) -> int:
    from fedlib.methods import METHODS

    for name in sorted(METHODS):
        cls = METHODS[name]
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name}: {summary}")
        base = {f.name for f in dataclasses.fields(METHODS["fedavg"])}
        own = {k: v for k, v in method_options(name).items() if k not in base or args.all}
        for key, value in own.items():
            print(f"    {key} = {value!r}")
    if not args.all:
        print(
            "\nEvery method also takes the training options of fedavg "
            "(see `python -m fedlib methods --all`)."
        )
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from fedlib.data.registry import DATASETS

    for name, entry in DATASETS.items():
        print(f"{name}: {entry.summary}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from fedlib.core import Simulation
    from fedlib.data.registry import load_dataset
    from fedlib.evaluation import evaluate_run
    from fedlib.methods import METHODS, get_method
    from fedlib.models import SmallCNN

    if args.method not in METHODS:
        raise SystemExit(
            f"fedlib run: unknown method {args.method!r}; valid methods: "
            f"{', '.join(sorted(METHODS))}."
        )
    settings = parse_settings(args.set or [], args.method)
    try:
        method = get_method(args.method, **settings)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"fedlib run: {exc}") from exc
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        try:
            data = load_dataset(
                args.dataset,
                partition=args.partition,
                num_clients=args.clients,
                alpha=args.alpha,
                imbalance_factor=args.imbalance_factor,
                seed=seed,
                root=args.root,
                **dict(_parse_kv(args.data_option or [])),
            )
        except (TypeError, ValueError, FileNotFoundError) as exc:
            raise SystemExit(f"fedlib run: {exc}") from exc
        channels = int(data.train[0][0][0].shape[0])
        width = args.width

        def model_fn(channels=channels, classes=data.num_classes, width=width):
            return SmallCNN(channels, classes, width=width)

        try:
            sim = Simulation(
                method,
                model_fn,
                data,
                num_rounds=args.rounds,
                fraction=args.fraction,
                seed=seed,
                progress=not args.no_progress,
                device=args.device,
                eval_every=args.eval_every,
            )
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"fedlib run: {exc}") from exc
        tic = time.perf_counter()
        history = sim.run()
        seconds = time.perf_counter() - tic
        seed_dir = out / f"seed{seed}"
        history.save(seed_dir)
        summary = {
            "method": args.method,
            "dataset": args.dataset,
            "partition": args.partition,
            "seed": seed,
            "rounds": args.rounds,
            "seconds": seconds,
            "options": method.params(),
            "reported_at": "last round",
            **evaluate_run(sim),
        }
        (seed_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json))
        rows.append(summary)
        print(
            f"seed {seed}: gen BAcc {summary['gen_balanced_accuracy']:.3f}, "
            f"spec BAcc {summary['spec_balanced_accuracy']:.3f} ({seconds:.1f} s) -> {seed_dir}"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    table = report_table([Path(d) for d in args.dirs], metrics=args.metrics or SUMMARY_METRICS)
    print(table.to_string(index=False))
    return 0


def report_table(dirs: list[Path], metrics: tuple[str, ...] = SUMMARY_METRICS) -> pd.DataFrame:
    """Mean ± std over seeds of the summary metrics of each run folder."""
    rows = []
    for directory in dirs:
        files = sorted(directory.glob("seed*/summary.json"))
        if not files:
            raise SystemExit(f"fedlib report: no seed*/summary.json under {directory}.")
        runs = [json.loads(f.read_text()) for f in files]
        row: dict[str, Any] = {
            "run": directory.name,
            "method": runs[0]["method"],
            "seeds": len(runs),
        }
        for metric in metrics:
            values = np.array([r.get(metric, np.nan) for r in runs], dtype=float)
            row[metric] = f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def _parse_kv(pairs: list[str]) -> list[tuple[str, Any]]:
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"fedlib run: --data-option expects KEY=VALUE, got {pair!r}.")
        key, value = pair.split("=", 1)
        out.append((key.strip().replace("-", "_"), _infer(value)))
    return out


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedlib",
        description="Federated learning for "
        "medical imaging: run methods, list them, report results.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a method on a dataset for one or more seeds")
    run.add_argument("--method", required=True, help="method name (see `fedlib methods`)")
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a method option, e.g. --set mu=0.1 --set loss=bsm (repeatable)",
    )
    run.add_argument("--dataset", default="synthderm", help="dataset name (see `fedlib datasets`)")
    run.add_argument(
        "--data-option",
        action="append",
        metavar="KEY=VALUE",
        help="a dataset option, e.g. --data-option scale=0.2 (repeatable)",
    )
    run.add_argument(
        "--partition",
        default="sites",
        choices=("sites", "dirichlet", "pathological"),
        help="natural sites, or a Dirichlet / pathological split of the pooled data",
    )
    run.add_argument("--clients", type=int, default=None, help="clients for a synthetic split")
    run.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    run.add_argument(
        "--imbalance-factor",
        type=float,
        default=None,
        help="global long tail n_max/n_min applied before the split",
    )
    run.add_argument("--rounds", type=int, default=20, help="communication rounds")
    run.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    run.add_argument("--fraction", type=float, default=1.0, help="clients sampled per round")
    run.add_argument("--eval-every", type=int, default=1, help="evaluate every N rounds")
    run.add_argument("--width", type=int, default=8, help="SmallCNN width")
    run.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    run.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    run.add_argument(
        "--root",
        default=None,
        help="data root for real datasets (default: $FEDLIB_DATA_DIR or ~/.cache/fedlib)",
    )
    run.add_argument("--out", required=True, help="output folder (one seedN/ folder per seed)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.set_defaults(func=cmd_run)

    methods = sub.add_parser("methods", help="list methods with their options and defaults")
    methods.add_argument("--all", action="store_true", help="also list the shared options")
    methods.set_defaults(func=cmd_methods)

    datasets = sub.add_parser("datasets", help="list datasets")
    datasets.set_defaults(func=cmd_datasets)

    report = sub.add_parser("report", help="mean and spread across seeds of run folders")
    report.add_argument("dirs", nargs="+", help="folders written by `fedlib run --out`")
    report.add_argument("--metrics", nargs="+", default=None, help="summary keys to show")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
