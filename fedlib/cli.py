"""Command line: ``python -m fedlib run | methods | datasets | report | check-data``.

Examples
--------
Three seeds of FedProx on SynthDerm's six sites::

    python -m fedlib run --method fedprox --set mu=0.1 --dataset synthderm --rounds 20 \
        --seeds 0 1 2 --out runs/fedprox

A Dirichlet long-tail split, then the mean and spread table::

    python -m fedlib run --method fedavg --set loss=bsm --dataset synthderm \
        --partition dirichlet --alpha 0.5 --imbalance-factor 50 --clients 10 --out runs/bsm
    python -m fedlib report runs/fedprox runs/bsm

Your own data (a ``.npz`` file, format in :mod:`fedlib.data.arrays`)::

    python -m fedlib run --dataset my_sites.npz --method fedavg --rounds 3 --out runs/mine

Safety rules: ``run`` never overwrites a run folder (``--resume`` continues its unfinished seeds
from their checkpoints and skips finished ones; ``--overwrite`` replaces it); each seed is
checkpointed every round (``--checkpoint-every N``: every N rounds and after the last; 0: never,
and a resumed seed starts afresh) and a resume must match the recorded settings and data
fingerprints; ``report`` refuses to pool seeds of different settings. Every failure is
one line ``fedlib <verb>: ...`` with a non-zero exit status (``--debug`` shows the traceback).
The run folder format (``config.json``, ``model.pt``, ...) and :func:`load_run` are documented
in :mod:`fedlib.runs`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from fedlib.runs import (
    RUN_FORMAT,
    SUMMARY_METRICS,
    RunError,
    differences,
    load_run,
    read_json,
    report_table,
    seed_dirs,
    sha256_of,
    write_json,
)

__all__ = ["CLIError", "build_parser", "load_run", "main", "parse_value", "report_table"]


class CLIError(Exception):
    """A user-facing failure: ``main`` prints ``fedlib <verb>: <message>`` and exits non-zero."""


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


def method_registry(task: str = "classification") -> dict[str, Any]:
    """The methods ``--method`` takes for a task: classification (:data:`fedlib.methods.METHODS`)
    or segmentation (:data:`fedlib.segmentation.SEGMENTATION_METHODS`)."""
    if task == "segmentation":
        from fedlib.segmentation import SEGMENTATION_METHODS

        return SEGMENTATION_METHODS
    from fedlib.methods import METHODS

    return METHODS


def method_options(
    name: str, *, npr: bool = False, task: str = "classification"
) -> dict[str, Any]:
    """The options of a method with their defaults (with ``npr``, plus the ``npr_*`` options of
    the NPR plug-in)."""
    from fedlib.methods import with_npr

    registry = method_registry(task)
    cls = with_npr(registry[name]) if npr else registry[name]
    options = {f.name: _field_default(f) for f in dataclasses.fields(cls)}
    options.setdefault("npr", False)
    return options


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def parse_settings(
    pairs: list[str], method: str, task: str = "classification"
) -> dict[str, Any]:
    """``["mu=0.1", "loss=bsm"]`` to typed keyword arguments, naming unknown options.

    ``npr=true`` adds the NPR plug-in and its ``npr_*`` options to any method.
    """
    npr = False
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key.strip() == "npr":
            try:
                npr = parse_value(value, False)
            except ValueError as exc:
                raise CLIError(f"option 'npr': {exc}.") from exc
    if npr and task == "segmentation":
        raise CLIError("npr=true is a plug-in for classification methods; "
                       f"{method!r} is run here as a segmentation method.")
    options = method_options(method, npr=npr, task=task)
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise CLIError(f"--set expects KEY=VALUE, got {pair!r}.")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in options:
            raise CLIError(
                f"method {method!r} has no option {key!r}; valid options: "
                f"{', '.join(sorted(options))}."
            )
        try:
            out[key] = parse_value(value, options[key])
        except ValueError as exc:
            raise CLIError(f"option {key!r}: {exc}.") from exc
    return out


def _parse_kv(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise CLIError(f"--data-option expects KEY=VALUE, got {pair!r}.")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = _infer(value)
    return out


# --------------------------------------------------------------------------- checks
def _check_device(text: str | None) -> str | None:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, present on this machine; None = automatic."""
    if text is None:
        return None
    import torch

    name = text.strip().lower()
    if name == "cpu":
        return name
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise CLIError(f"--device {text}: CUDA is not available on this machine; use "
                           "--device cpu.")
        if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
            raise CLIError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA "
                           "device(s).")
        return name
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise CLIError(f"--device {text}: Apple MPS is not available on this machine.")
        return name
    raise CLIError(f"--device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {text!r}.")


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file or lies below a file."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file, not a folder.")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CLIError(f"--out {out}: {parent} is a file, not a folder.")
            break


def _remove_empty_tree(path: Path) -> None:
    """Remove ``path`` if it holds nothing but empty folders (never a file)."""
    if not path.is_dir() or path.is_symlink():
        return
    for child in path.iterdir():
        _remove_empty_tree(child)
    if not any(path.iterdir()):
        path.rmdir()


def _first_image_channels(data) -> int:
    for k in data.client_ids():
        if len(data.train[k]):
            item = data.train[k][0]
            image = item["image"] if isinstance(item, dict) else item[0]
            return int(image.shape[0])
    raise CLIError(f"dataset {data.name!r}: every client's training split is empty.")


# --------------------------------------------------------------------------- commands
def cmd_methods(args: argparse.Namespace) -> int:
    from fedlib.methods import METHODS

    base = {f.name for f in dataclasses.fields(METHODS["fedavg"])}
    for name in sorted(METHODS):
        cls = METHODS[name]
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name}: {summary}")
        own = {k: v for k, v in method_options(name).items()
               if (k not in base or args.all) and k != "npr"}
        for key, value in own.items():
            print(f"    {key} = {value!r}")
    plug_in = {k: v for k, v in method_options("fedavg", npr=True).items() if k not in base}
    print("\nNPR plug-in: --set npr=true adds the NPR term to any classification method, with")
    for key, value in plug_in.items():
        if key != "npr":
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
        print(f"{'medmnist:<name>' if name == 'medmnist' else name}: {entry.summary}")
    print("path/to/file.npz: your own arrays (keys x_train, y_train, client, x_test, y_test, "
          "optional client_test; see fedlib.data.arrays)")
    return 0


def _run_settings(args: argparse.Namespace, method) -> dict[str, Any]:
    """What defines the experiment apart from the seed (hashed into the settings fingerprint)."""
    return {
        "method": {"name": args.method, "params": method.params()},
        "dataset": {
            "name": args.dataset,
            "partition": args.partition,
            "num_clients": args.clients,
            "alpha": args.alpha,
            "imbalance_factor": args.imbalance_factor,
            "local_test": args.local_test,
            "options": _parse_kv(args.data_option or []),
        },
        "model": {"name": _model_name(args), "width": _width(args)},
        "simulation": {
            "num_rounds": args.rounds,
            "fraction": args.fraction,
            "eval_every": args.eval_every,
        },
    }


def _task(args: argparse.Namespace) -> str:
    from fedlib.data.registry import task_of

    return task_of(args.dataset)


def _model_name(args: argparse.Namespace) -> str:
    return "UNet" if _task(args) == "segmentation" else "SmallCNN"


def _width(args: argparse.Namespace) -> int:
    """``--width``, or the task's default: 8 for SmallCNN, 16 for the U-Net."""
    if args.width is not None:
        return args.width
    return 16 if _task(args) == "segmentation" else 8


def _seed_state(folder: Path) -> str:
    if (folder / "summary.json").exists():
        return "finished"
    if (folder / "checkpoint.pt").exists():
        return "unfinished"
    return "not started"


def _prepare_out(out: Path, args: argparse.Namespace, settings: dict, fingerprint: str) -> None:
    """Refuse to touch an existing run unless --resume (same settings) or --overwrite."""
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite exclude each other.")
    if not out.is_dir() or not any(out.iterdir()):
        return
    seeds = seed_dirs(out)
    has_run = (out / "run.json").exists() or bool(seeds)
    if not has_run:
        return  # a folder holding other files: the run adds its own next to them
    states = {s: _seed_state(f) for s, f in seeds.items()}
    described = "; ".join(
        f"seed {s} {state}" for s, state in states.items()
    ) or "no seed folder yet"
    if args.overwrite:
        for folder in seeds.values():
            shutil.rmtree(folder)
        (out / "run.json").unlink(missing_ok=True)
        print(f"--overwrite: removed the earlier run in {out} ({described}).")
        return
    if not args.resume:
        raise CLIError(f"{out} already holds a run ({described}); pass --resume to continue "
                       "its unfinished seeds or --overwrite to replace it, or choose another "
                       "--out.")
    if not (out / "run.json").exists():
        raise CLIError(f"{out} holds seed folders but no run.json (written by an older fedlib "
                       "or by hand); it cannot be resumed safely: use --overwrite or another "
                       "--out.")
    previous = read_json(out / "run.json")
    if previous.get("settings_fingerprint") != fingerprint:
        diff = differences(previous.get("settings", {}), settings)
        raise CLIError(f"--resume: {out} was run with other settings ("
                       + ("; ".join(diff[:5]) or "fingerprints differ")
                       + "); use another --out, or --overwrite to replace it.")


def _simulation_kwargs(args: argparse.Namespace, seed_dir: Path) -> dict[str, Any]:
    """The checkpoint options of a seed's :class:`~fedlib.core.Simulation`: its folder and
    ``--checkpoint-every`` (none with 0)."""
    every = args.checkpoint_every
    if every == 0:
        return {}
    return {"checkpoint_dir": str(seed_dir), "checkpoint_every": every}


CHECKPOINT_EVERY = "an int >= 0 (N: a checkpoint every N rounds and after the last; 0: none)"


def _checkpoint_every(text: str) -> int:
    """``--checkpoint-every``'s value, or a usage error that says what is allowed."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be {CHECKPOINT_EVERY}, got {text!r}")
    return value


def _build_method(name: str, settings: dict[str, Any], task: str):
    if task == "segmentation":
        from fedlib.segmentation import get_segmentation_method

        return get_segmentation_method(name, **settings)
    from fedlib.methods import get_method

    return get_method(name, **settings)


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    task = _task(args)
    methods = method_registry(task)
    if args.method not in methods:
        raise CLIError(f"unknown method {args.method!r} for the {task} dataset "
                       f"{args.dataset!r}; valid methods: {', '.join(sorted(methods))}.")
    if args.threads < 1:
        raise CLIError(f"--threads must be an int >= 1, got {args.threads}.")
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        raise CLIError(f"--seeds must be distinct ints >= 0, got {args.seeds}.")
    device = _check_device(args.device)
    out = Path(args.out)
    _check_out(out)
    method = _build_method(args.method, parse_settings(args.set or [], args.method, task), task)
    settings = _run_settings(args, method)
    fingerprint = sha256_of(settings)
    torch.set_num_threads(args.threads)
    _prepare_out(out, args, settings, fingerprint)

    created = not out.exists()
    try:
        for seed in args.seeds:
            _run_seed(args, method, settings, fingerprint, seed, out, device)
    except BaseException:
        if created:
            _remove_empty_tree(out)
        raise
    return 0


def _write_run_json(out: Path, settings: dict, fingerprint: str, seeds: list[int]) -> None:
    previous = read_json(out / "run.json") if (out / "run.json").exists() else {}
    asked = sorted(set(previous.get("seeds", [])) | set(seeds))
    write_json(out / "run.json", {"format": RUN_FORMAT, "settings": settings,
                                  "settings_fingerprint": fingerprint, "seeds": asked})


def _run_seed(args, method, settings, fingerprint, seed, out, device) -> None:
    import fedlib
    from fedlib.core import Simulation
    from fedlib.data.registry import load_dataset
    from fedlib.evaluation import evaluate_run
    from fedlib.models import SmallCNN

    seed_dir = out / f"seed{seed}"
    state = _seed_state(seed_dir) if seed_dir.is_dir() else "not started"
    if args.resume and state == "finished":
        done = read_json(seed_dir / "summary.json")
        if done.get("settings_fingerprint") != fingerprint:
            raise CLIError(f"--resume: {seed_dir} finished with other settings; use another "
                           "--out.")
        _write_run_json(out, settings, fingerprint, list(args.seeds))
        print(f"seed {seed}: finished earlier, skipped ({seed_dir}).")
        return
    spec = settings["dataset"]
    data = load_dataset(
        spec["name"], partition=spec["partition"], num_clients=spec["num_clients"],
        alpha=spec["alpha"], imbalance_factor=spec["imbalance_factor"],
        local_test=spec["local_test"], seed=seed, root=args.root, **spec["options"],
    )
    empty_train = data.empty_clients("train")
    if len(empty_train) == data.num_clients:
        raise CLIError(f"dataset {data.name!r}: every client's training split is empty.")
    segmentation = _task(args) == "segmentation"
    if segmentation:
        from fedlib.models import UNet as model_class
        from fedlib.segmentation import SegmentationSimulation as simulation_class
        from fedlib.segmentation import evaluate_segmentation_run as evaluate_seed

        model_kwargs = {"in_channels": _first_image_channels(data), "num_classes": 1,
                        "width": _width(args)}
    else:
        model_class, simulation_class, evaluate_seed = SmallCNN, Simulation, evaluate_run
        model_kwargs = {"in_channels": _first_image_channels(data),
                        "num_classes": data.num_classes, "width": _width(args)}
    sim_kwargs = _simulation_kwargs(args, seed_dir)
    sim = simulation_class(
        method,
        lambda: model_class(**model_kwargs),
        data,
        num_rounds=args.rounds,
        fraction=args.fraction,
        seed=seed,
        progress=not args.no_progress,
        device=device,
        eval_every=args.eval_every,
        **sim_kwargs,
    )
    data_fingerprint = data.fingerprint()
    config = {
        "format": RUN_FORMAT,
        "fedlib_version": fedlib.__version__,
        "seed": seed,
        "method": settings["method"],
        "dataset": {**spec, "root": args.root},
        "task": _task(args),
        "model": {"name": _model_name(args), "kwargs": model_kwargs},
        "simulation": settings["simulation"],
        "settings": settings,
        "settings_fingerprint": fingerprint,
        "dataset_fingerprint": data_fingerprint,
        "fingerprint": sha256_of([fingerprint, data_fingerprint, seed]),
    }
    resume = args.resume and state == "unfinished" and "checkpoint_dir" in sim_kwargs
    if resume:
        recorded = read_json(seed_dir / "config.json")
        if recorded.get("fingerprint") != config["fingerprint"]:
            what = differences({k: recorded.get(k) for k in ("settings", "dataset_fingerprint")},
                               {k: config[k] for k in ("settings", "dataset_fingerprint")})
            raise CLIError(f"--resume: the checkpoint in {seed_dir} was made from other data or "
                           f"settings ({'; '.join(what[:4]) or 'fingerprints differ'}); use "
                           "another --out.")
    _write_run_json(out, settings, fingerprint, list(args.seeds))
    if empty_train:
        names = ", ".join(f"{k} ({data.client_names[k]})" for k in empty_train)
        print(f"seed {seed}: client(s) {names} hold no training image.")
    write_json(seed_dir / "config.json", config)
    tic = time.perf_counter()
    history = sim.run(resume=resume)
    seconds = time.perf_counter() - tic
    history.save(seed_dir)
    from fedlib.core.checkpoint import save_weights

    model = sim.global_model()
    save_weights(seed_dir / "model.pt",
                 {k: v.detach().cpu() for k, v in model.state_dict().items()})
    summary = {
        "method": args.method,
        "dataset": args.dataset,
        "partition": args.partition,
        "seed": seed,
        "rounds": args.rounds,
        "options": method.params(),
        "settings_fingerprint": fingerprint,
        "fingerprint": config["fingerprint"],
        "reported_at": "last round",
        **evaluate_seed(sim),
    }
    if getattr(method, "head_choices", None):  # two-head methods (FCA): all four pairings
        from fedlib.evaluation import head_grid

        summary["head_pairings"] = head_grid(sim).to_dict(orient="records")
    write_json(seed_dir / "timing.json", {"seconds": seconds, "resumed": resume})
    write_json(seed_dir / "summary.json", summary)
    shown = ", ".join(f"{name.replace('_balanced_accuracy', ' BAcc')} {summary[name]:.3f}"
                      for name in ("gen_balanced_accuracy", "spec_balanced_accuracy",
                                   "gen_dice", "spec_dice")
                      if isinstance(summary.get(name), float))
    print(f"seed {seed}: {shown} ({seconds:.1f} s) -> {seed_dir}")


def cmd_report(args: argparse.Namespace) -> int:
    table, notes = report_table([Path(d) for d in args.dirs], metrics=args.metrics)
    print(table.to_string(index=False))
    for note in notes:
        print(f"note: {note}")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from fedlib.grid import collect, load_grid, paper_tables, run_grid

    grid = load_grid(args.grid)
    if args.report:
        table = collect(grid, args.out)
        table.to_csv(Path(args.out) / "results.csv", index=False)
    else:
        table = run_grid(grid, args.out, run=main)
    if table.empty:
        raise CLIError(f"no finished cell under {args.out}.")
    for name, frame in paper_tables(table).items():
        print(f"\n{name}\n{frame.to_string(index=False)}")
    print(f"\n{len(table)} rows -> {Path(args.out) / 'results.csv'}")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    """Decode every file of a prepared dataset once; list each unreadable or odd one."""
    from tqdm import tqdm

    from fedlib.data.registry import load_dataset

    data = load_dataset(args.name, root=args.root, **_parse_kv(args.data_option or []))
    items: dict[str, tuple[Any, int]] = {}
    in_memory = 0
    for k in data.client_ids():
        for part in (data.train[k], data.test[k]):
            paths = getattr(part, "paths", None)
            if paths is None:
                in_memory += len(part)
                continue
            for i, path in enumerate(paths):
                items.setdefault(str(path), (part, i))
    problems: list[str] = []
    shapes: dict[tuple[int, ...], str] = {}
    for path, (part, i) in tqdm(items.items(), desc=f"check {args.name}", unit="file",
                                disable=args.no_progress):
        try:
            image = part.load_image(i)
            if getattr(part, "has_masks", False):
                mask = part.load_mask(i)
                if mask.shape[-2:] != image.shape[-2:]:
                    raise ValueError(f"mask is {tuple(mask.shape[-2:])}, image "
                                     f"{tuple(image.shape[-2:])}")
            label = int(part.labels[i])
            if not 0 <= label < data.num_classes:
                raise ValueError(f"label {label} outside 0..{data.num_classes - 1}")
            shapes.setdefault(tuple(image.shape[:1]), path)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the scan
            message = str(exc).replace(path, "").strip(": ")
            problems.append(f"{path}: {message}")
    if len(shapes) > 1:
        problems.append("images have different channel counts: " + ", ".join(
            f"{shape[0]} (e.g. {example})" for shape, example in shapes.items()))
    for line in problems:
        print(line)
    summary = f"{len(items)} file(s) decoded"
    if in_memory:
        summary += f", {in_memory} in-memory image(s) (nothing to decode)"
    if problems:
        raise CLIError(f"{args.name}: {len(problems)} of {len(items)} file(s) unreadable or "
                       "inconsistent (listed above).")
    print(f"{args.name}: {summary}, all readable.")
    return 0


# --------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line ``fedlib <verb>: ...``."""

    def error(self, message: str):  # type: ignore[override]
        raise SystemExit(f"{self.prog}: {message} (see {self.prog} --help).")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fedlib",
        description="Federated learning for "
        "medical imaging: run methods, list them, report results.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        verb = sub.add_parser(name, **kwargs)
        verb.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show tracebacks of failures")
        return verb

    run = add("run", help="run a method on a dataset for one or more seeds")
    run.add_argument("--method", required=True, help="method name (see `fedlib methods`)")
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a method option, e.g. --set mu=0.1 --set loss=bsm (repeatable)",
    )
    run.add_argument("--dataset", default="synthderm",
                     help="dataset name (see `fedlib datasets`), medmnist:<name>, or a .npz file")
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
    run.add_argument("--clients", type=int, default=None, help="clients of a re-partition")
    run.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    run.add_argument(
        "--imbalance-factor",
        type=float,
        default=None,
        help="global long tail n_max/n_min applied before the split",
    )
    run.add_argument(
        "--local-test",
        default="split",
        choices=("split", "proportional"),
        help="each client's test set: its own split, or sampled from a balanced global test "
        "set in proportion to its training labels",
    )
    run.add_argument("--rounds", type=int, default=20, help="communication rounds")
    run.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    run.add_argument("--fraction", type=float, default=1.0, help="clients sampled per round")
    run.add_argument("--eval-every", type=int, default=1, help="evaluate every N rounds")
    run.add_argument("--width", type=int, default=None,
                     help="model width (default 8 for SmallCNN, 16 for the segmentation U-Net)")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps "
                     "(default: cuda if present)")
    run.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    run.add_argument(
        "--root",
        default=None,
        help="data root for real datasets (default: $FEDLIB_DATA_DIR or ~/.cache/fedlib)",
    )
    run.add_argument("--out", required=True, help="output folder (one seedN/ folder per seed)")
    run.add_argument("--resume", action="store_true",
                     help="continue the unfinished seeds of --out from their checkpoints")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run already in --out")
    run.add_argument("--checkpoint-every", type=_checkpoint_every, default=1, metavar="N",
                     help="write the seed's checkpoint.pt every N rounds and after the last "
                     "(default 1: every round; 0: never, and --resume restarts an unfinished "
                     "seed); an int >= 0")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.set_defaults(func=cmd_run)

    methods = add("methods", help="list methods with their options and defaults")
    methods.add_argument("--all", action="store_true", help="also list the shared options")
    methods.set_defaults(func=cmd_methods)

    datasets = add("datasets", help="list datasets")
    datasets.set_defaults(func=cmd_datasets)

    report = add("report", help="mean and spread across seeds of run folders")
    report.add_argument("dirs", nargs="+", help="folders written by `fedlib run --out`")
    report.add_argument("--metrics", nargs="+", default=None,
                        help=f"summary keys to show (default: {', '.join(SUMMARY_METRICS)})")
    report.set_defaults(func=cmd_report)

    check = add("check-data", help="decode every file of a prepared dataset once, list the "
                "unreadable or inconsistent ones")
    check.add_argument("name", help="dataset name (see `fedlib datasets`)")
    check.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                       help="a dataset option, e.g. --data-option image_size=128")
    check.add_argument("--root", default=None, help="data root")
    check.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    check.set_defaults(func=cmd_check_data)

    grid = add("grid", help="run a grid of methods x datasets x seeds (resumable) and print "
               "the results tables")
    grid.add_argument("grid", help="grid file (JSON; see fedlib.grid)")
    grid.add_argument("--out", required=True, help="grid folder (runs/, results.csv)")
    grid.add_argument("--report", action="store_true",
                      help="only collect and print the finished cells, run nothing")
    grid.set_defaults(func=cmd_grid)

    from fedlib.quant.cli import add_parser as add_quantize

    add_quantize(sub)
    return parser


def _one_line(exc: BaseException, dataset: str | None = None) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, CLIError | RunError | ValueError | TypeError | OSError) or (
        type(exc).__name__ == "ClientError"
    ):
        message = text
    else:
        message = f"{type(exc).__name__}: {text} (run with --debug for the traceback)"
    cause: BaseException | None = exc
    while cause is not None:
        if type(cause).__name__ == "DataFormatError" and dataset is not None:
            message += (f" Run `python -m fedlib check-data {dataset}` to list every unreadable "
                        "file before training.")
            break
        cause = cause.__cause__
    return message


def main(argv: list[str] | None = None) -> int:
    """Run a command; a failure raises ``SystemExit("fedlib <verb>: <one line>")``."""
    args = build_parser().parse_args(argv)
    verb = args.command
    try:
        return int(args.func(args) or 0)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        hint = "; continue with --resume" if verb == "run" else ""
        raise SystemExit(f"fedlib {verb}: interrupted{hint}.") from None
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        dataset = getattr(args, "dataset", None) if verb == "run" else None
        raise SystemExit(f"fedlib {verb}: {_one_line(exc, dataset)}") from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
