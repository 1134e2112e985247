"""``python -m fedlib quantize RUN_DIR``: quantize the global model of a finished run.

Examples
--------
SDQ at an average of 3 weight bits, searched and trained on site 0's training images::

    python -m fedlib quantize runs/fedavg --method sdq --bits 3 --client 0 --out runs/fedavg-sdq3

Every layer at 4 bits, on the pooled training data of all clients::

    python -m fedlib quantize runs/fedavg --method uniform --bits 4 --out runs/fedavg-u4

Writes to ``--out``: ``strategy.json`` (bits per layer), ``summary.json`` (accuracy and balanced
accuracy of the full-precision and of the quantized model, average bits, size in bytes,
compression ratios, BitOps, the options), ``layers.csv`` (one row per quantized layer) and
``model.pt``: the quantized model as a state dict of the plain architecture (weights already on
their quantization levels; ``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``quantize`` verb to ``fedlib``'s sub-command parsers."""
    p = subparsers.add_parser(
        "quantize",
        help="quantize a finished run's global model (SDQ, uniform QAT, interpolation MPQ)",
        description="Quantize the saved global model of a finished `fedlib run` with "
        "mixed-precision SDQ, uniform quantization-aware training or linear-interpolation MPQ.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `fedlib run --out`")
    p.add_argument("--method", default="sdq", choices=("sdq", "uniform", "interp"),
                   help="how the bits per layer are chosen (default: sdq)")
    p.add_argument("--bits", type=float, default=2.0,
                   help="target average weight bits (sdq, interp) or the bits of every layer "
                   "(uniform, an integer); default 2")
    p.add_argument("--seed", type=int, default=None,
                   help="which seedN of RUN_DIR (default: the smallest finished seed)")
    p.add_argument("--client", type=int, default=None,
                   help="search and train on this client's training split only (default: the "
                   "pooled training data of every client)")
    p.add_argument("--candidates", type=int, nargs="+", default=[8, 7, 6, 5, 4, 3, 2, 1],
                   help="candidate bitwidths (default 8 7 6 5 4 3 2 1)")
    p.add_argument("--act-bits", type=int, default=32,
                   help="activation bits of every quantized layer but the first (32: float)")
    p.add_argument("--keep-first-last", action="store_true",
                   help="keep the first and last layers in float32")
    p.add_argument("--epochs", type=int, default=10, help="stage-2 training epochs")
    p.add_argument("--loss", default="kd", choices=("kd", "ce"),
                   help="stage-2 loss: distillation from the run's model, or labels (default kd)")
    p.add_argument("--lambda-e", type=float, default=0.1, help="bin regularizer weight")
    p.add_argument("--search-steps", type=int, default=1000, help="maximum search steps")
    p.add_argument("--lambda-b", type=float, default=1.0, help="budget weight of the search")
    p.add_argument("--bit-lr", type=float, default=0.01,
                   help="Adam learning rate of the bitwidth parameters")
    p.add_argument("--commit-every", type=int, default=20, help="steps between commits")
    p.add_argument("--batch-size", type=int, default=64, help="mini-batch size")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the weights")
    p.add_argument("--quant-seed", type=int, default=0, help="seed of the quantization")
    p.add_argument("--root", default=None, help="data root, if the data moved since the run")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    p.add_argument("--out", required=True, help="output folder (created; must be empty)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``fedlib quantize``; failures exit with ``fedlib quantize: <one line>``."""
    try:
        return _run(args)
    except (ValueError, TypeError, OSError, KeyError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise SystemExit(f"fedlib quantize: {text}") from None


def _run(args: argparse.Namespace) -> int:
    import torch

    import fedlib
    from fedlib.quant.layers import deployable_state_dict
    from fedlib.quant.pipeline import quantize
    from fedlib.quant.report import layer_table, quant_summary
    from fedlib.quant.training import as_tensors, evaluate
    from fedlib.runs import load_run, seed_dirs

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder.")
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"RUN_DIR {run_dir} is not a folder.")
    seeds = [s for s, folder in seed_dirs(run_dir).items() if (folder / "model.pt").is_file()]
    if args.seed is None and not seeds:
        raise ValueError(f"{run_dir} holds no finished seed (no seedN/model.pt).")
    seed = min(seeds) if args.seed is None else args.seed
    torch.set_num_threads(args.threads)
    device = fedlib.device(args.device)
    teacher, dataset, config = load_run(run_dir, seed, root=args.root)
    teacher.to(device).eval()
    if args.client is not None and args.client not in dataset.client_ids():
        raise ValueError(f"'--client' must be one of the run's clients 0..{dataset.num_clients - 1}"
                         f", got {args.client}.")
    train = dataset.pooled("train") if args.client is None else dataset.train[args.client]
    test = dataset.pooled_test()
    bits: float = args.bits
    if args.method == "uniform":
        if bits != int(bits):
            raise ValueError(f"--method uniform needs an integer --bits, got {bits}.")
        bits = int(bits)
    training = {"epochs": args.epochs, "loss": args.loss, "lambda_e": args.lambda_e,
                "batch_size": args.batch_size, "lr": args.lr}
    search = {"max_search_steps": args.search_steps, "lambda_b": args.lambda_b,
              "bit_lr": args.bit_lr, "commit_every": args.commit_every}
    result = quantize(
        teacher, train, method=args.method, bits=bits, seed=args.quant_seed,
        candidates=tuple(args.candidates), act_bits=args.act_bits,
        quantize_first_last=not args.keep_first_last,
        search=search if args.method != "uniform" else None, training=training,
    )
    example = as_tensors(test)[0][:1].to(device)
    summary: dict[str, Any] = {
        "run_dir": str(run_dir), "seed": seed, "method": args.method, "bits": bits,
        "client": args.client, "run_method": config["method"]["name"],
        "dataset": config["dataset"]["name"], "evaluated_on": "pooled test set",
    }
    for prefix, model in (("", result.model), ("fp32_", teacher)):
        summary.update({prefix + k: v for k, v in evaluate(model, test).items()})
    if args.client is not None:
        own = dataset.test[args.client]
        summary.update({"client_" + k: v for k, v in evaluate(result.model, own).items()})
    summary.update(quant_summary(result.model, example))
    if result.search is not None:
        summary["search_steps"] = int(result.search.steps_)
        summary["forced_layers"] = list(result.search.forced_)
    summary["options"] = {"training": result.training.params(), "search": search,
                          "candidates": list(args.candidates), "act_bits": args.act_bits,
                          "quantize_first_last": not args.keep_first_last,
                          "quant_seed": args.quant_seed}
    out.mkdir(parents=True, exist_ok=True)
    (out / "strategy.json").write_text(json.dumps(result.strategy, indent=2) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
    layer_table(result.model, example).to_csv(out / "layers.csv", index=False)
    torch.save(deployable_state_dict(result.model), out / "model.pt")
    print(f"{args.method} at {summary['average_bits']:.2f} average bits "
          f"({summary['compression_ratio']:.1f}x smaller weights, {summary['size_bytes']} bytes): "
          f"balanced accuracy {summary['balanced_accuracy']:.3f} "
          f"(float32 {summary['fp32_balanced_accuracy']:.3f}) -> {out}")
    return 0


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
