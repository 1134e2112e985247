"""``python -m fedlib quantize`` end to end on a tiny finished run, and its error messages."""

from __future__ import annotations

import json

import pytest
import torch

from fedlib.cli import main
from fedlib.models import SmallCNN
from fedlib.quant import average_bits

TINY = ["--data-option", "scale=0.02", "--data-option", "image_size=28", "--width", "2"]
LAYERS = ["body.0", "body.4", "body.8", "head"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished one-round FedAvg run on a tiny SynthDerm, written by ``fedlib run``."""
    out = tmp_path_factory.mktemp("runs") / "fedavg"
    assert main(["run", "--method", "fedavg", "--dataset", "synthderm", "--rounds", "1",
                 "--out", str(out), "--no-progress", *TINY]) == 0
    return out


def test_uniform_writes_strategy_summary_and_a_weights_only_model(run_dir, tmp_path, capsys):
    out = tmp_path / "u2"
    assert main(["quantize", str(run_dir), "--method", "uniform", "--bits", "2",
                 "--epochs", "1", "--out", str(out)]) == 0
    strategy = json.loads((out / "strategy.json").read_text())
    assert strategy == dict.fromkeys(LAYERS, 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["average_bits"] == 2.0 and summary["compression_ratio"] == 16.0
    assert summary["seed"] == 0 and summary["method"] == "uniform"
    for key in ("accuracy", "balanced_accuracy", "fp32_accuracy", "size_bytes", "bitops"):
        assert key in summary
    assert summary["size_bytes"] < summary["fp32_size_bytes"]
    state = torch.load(out / "model.pt", weights_only=True)
    model = SmallCNN(3, 8, width=2)
    model.load_state_dict(state)
    for name in LAYERS:
        assert state[f"{name}.weight"].unique().numel() <= 4
    assert "balanced accuracy" in capsys.readouterr().out


def test_sdq_on_one_client_meets_the_budget(run_dir, tmp_path):
    out = tmp_path / "sdq"
    assert main(["quantize", str(run_dir), "--method", "sdq", "--bits", "3", "--client", "0",
                 "--candidates", "4", "3", "2", "--search-steps", "6", "--commit-every", "3",
                 "--epochs", "1", "--loss", "ce", "--out", str(out)]) == 0
    strategy = json.loads((out / "strategy.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    weights = {"body.0": 3 * 2 * 9, "body.4": 2 * 4 * 9, "body.8": 4 * 8 * 9, "head": 8 * 8}
    assert set(strategy.values()) <= {4, 3, 2}
    assert average_bits(strategy, weights) == pytest.approx(summary["average_bits"])
    assert summary["average_bits"] <= 3.0
    assert summary["client"] == 0 and "client_balanced_accuracy" in summary
    assert summary["search_steps"] <= 6


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "uniform", "--bits", "2.5"], "needs an integer --bits, got 2.5"),
        (["--client", "9"], "'--client' must be one of the run's clients 0..5, got 9"),
        (["--bits", "0.5"], "SDQSearch: 'target_bits' must be a float >= 1"),
        (["--seed", "3"], "no folder seed3"),
        (["--candidates", "4", "4"], "'candidates' must be a non-empty sequence of distinct"),
    ],
)
def test_errors_are_one_line(run_dir, tmp_path, extra, message):
    with pytest.raises(SystemExit) as info:
        main(["quantize", str(run_dir), *extra, "--search-steps", "2", "--epochs", "0",
              "--out", str(tmp_path / "q")])
    text = str(info.value.code)
    assert text.startswith("fedlib quantize: ") and "\n" not in text
    assert message in text


def test_refuses_a_missing_run_and_a_used_output_folder(run_dir, tmp_path):
    with pytest.raises(SystemExit, match="fedlib quantize: RUN_DIR .* is not a folder"):
        main(["quantize", str(tmp_path / "nowhere"), "--out", str(tmp_path / "q")])
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(SystemExit, match="fedlib quantize: --out .* is not an empty folder"):
        main(["quantize", str(run_dir), "--out", str(tmp_path / "used")])
