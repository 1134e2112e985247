"""Runs you can trust: no overwrite, resume that checks what it resumes, a real SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fedlib.cli import main
from fedlib.runs import report_table

TINY = ["--data-option", "scale=0.02", "--data-option", "image_size=28", "--width", "2",
        "--no-progress"]
REPO = Path(__file__).resolve().parents[1]


def run(out: Path, *extra: str, method: str = "fedavg", rounds: str = "2",
        seeds=("0",)) -> int:
    return main(["run", "--method", method, "--rounds", rounds, "--seeds", *seeds,
                 "--out", str(out), *TINY, *extra])


def test_run_refuses_to_overwrite_an_existing_run(tmp_path):
    out = tmp_path / "r"
    assert run(out) == 0
    before = (out / "seed0" / "summary.json").read_text()
    with pytest.raises(SystemExit, match=r"fedlib run: .*r already holds a run \(seed 0 "
                                         r"finished\); pass --resume .* or --overwrite"):
        run(out, method="fedprox")
    assert (out / "seed0" / "summary.json").read_text() == before


def test_overwrite_replaces_the_run(tmp_path, capsys):
    out = tmp_path / "r"
    assert run(out, seeds=("0", "1")) == 0
    (out / "notes.txt").write_text("my notes")
    assert run(out, "--overwrite", method="fedprox") == 0
    assert not (out / "seed1").exists()
    assert json.loads((out / "seed0" / "summary.json").read_text())["method"] == "fedprox"
    assert (out / "notes.txt").read_text() == "my notes"  # only the run's own files go
    assert "--overwrite: removed the earlier run" in capsys.readouterr().out


def test_resume_skips_finished_seeds_and_adds_new_ones(tmp_path, capsys):
    out = tmp_path / "r"
    assert run(out) == 0
    first = (out / "seed0" / "model.pt").read_bytes()
    assert run(out, "--resume", seeds=("0", "1")) == 0
    text = capsys.readouterr().out
    assert "seed 0: finished earlier, skipped" in text and "seed 1: gen BAcc" in text
    assert (out / "seed0" / "model.pt").read_bytes() == first
    assert json.loads((out / "run.json").read_text())["seeds"] == [0, 1]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--alpha", "0.3"], "dataset.alpha: 0.5 -> 0.3"),
        (["--eval-every", "2"], "simulation.eval_every: 1 -> 2"),
        (["--width", "4"], "model.width: 2 -> 4"),
        (["--data-option", "scale=0.03"], "dataset.options.scale: 0.02 -> 0.03"),
    ],
)
def test_resume_refuses_other_settings_and_names_them(tmp_path, change, named):
    out = tmp_path / "r"
    assert run(out) == 0
    with pytest.raises(SystemExit, match="--resume: .* was run with other settings \\("
                                         + named.replace(".", "\\.")):
        run(out, "--resume", *change)


def test_resume_refuses_a_checkpoint_of_other_data(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((24, 1, 8, 8)).astype(np.float32),
              "y_train": np.arange(24) % 2, "client": np.arange(24) % 3,
              "x_test": rng.random((6, 1, 8, 8)).astype(np.float32), "y_test": np.arange(6) % 2}
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    out = tmp_path / "r"
    args = ["run", "--dataset", str(path), "--method", "fedavg", "--rounds", "2",
            "--out", str(out), "--no-progress", "--width", "2"]
    assert main(args) == 0
    (out / "seed0" / "summary.json").unlink()  # as if killed after its last checkpoint
    arrays["x_train"][0] += 0.1
    np.savez(path, **arrays)  # same file name, other pixels
    with pytest.raises(SystemExit, match=r"--resume: the checkpoint in .*seed0 was made from "
                                         r"other data or settings \(dataset_fingerprint: "):
        main([*args, "--resume"])


def test_resume_with_an_empty_checkpoint_says_it_is_empty(tmp_path):
    out = tmp_path / "r"
    assert run(out) == 0
    (out / "seed0" / "summary.json").unlink()
    (out / "seed0" / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(SystemExit, match=r"fedlib run: .*checkpoint.pt is empty \(0 bytes\)"):
        run(out, "--resume")


def test_report_refuses_to_pool_seeds_of_different_settings(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    assert run(a, seeds=("0",)) == 0
    assert run(b, method="fedprox", rounds="1", seeds=("1",)) == 0
    shutil.copytree(b / "seed1", a / "seed1")  # another method's seed dropped into the folder
    with pytest.raises(SystemExit, match=r"fedlib report: .*a: seeds 0 and 1 were run with "
                                         r"different settings \(.*method\.name: 'fedavg' -> "
                                         r"'fedprox'"):
        main(["report", str(a)])


def test_report_says_which_seeds_are_missing_and_when_there_is_no_spread(tmp_path, capsys):
    out = tmp_path / "r"
    assert run(out, seeds=("0", "1", "2")) == 0
    shutil.rmtree(out / "seed1")
    (out / "seed2" / "summary.json").unlink()
    table, notes = report_table([out])
    assert table.loc[0, "seeds"] == 1 and table.loc[0, "missing"] == "1, 2"
    assert table.loc[0, "gen_balanced_accuracy"].endswith("(1 seed: no spread)")
    assert "± 0.000" not in table.to_string()
    assert notes == ["r: seed(s) 1, 2 missing (asked for 3, 1 finished)."]
    assert main(["report", str(out)]) == 0
    assert "note: r: seed(s) 1, 2 missing" in capsys.readouterr().out


# --------------------------------------------------------------------------- a real SIGKILL
KILL_ARGS = ["--method", "fedavg", "--rounds", "3", "--seeds", "0", "--threads", "1",
             "--device", "cpu",  # bit-identical across processes (CUDA kernels may not be)
             "--data-option", "scale=0.02", "--data-option", "image_size=28", "--width", "2",
             "--no-progress"]


def _cli(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "fedlib", "run", *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_run_killed_mid_seed_resumes_to_the_same_summary_and_weights(tmp_path):
    killed_dir = tmp_path / "killed"
    victim = _cli(*KILL_ARGS, "--out", str(killed_dir))
    checkpoint = killed_dir / "seed0" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)  # right after the first round's checkpoint
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert checkpoint.exists() and not (killed_dir / "seed0" / "summary.json").exists()
    killed_at = torch.load(checkpoint, weights_only=True)["round"]
    assert 1 <= killed_at < 3

    resumed = _cli(*KILL_ARGS, "--out", str(killed_dir), "--resume")
    assert main(["run", *KILL_ARGS, "--out", str(tmp_path / "whole")]) == 0  # meanwhile
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1]
    assert json.loads((killed_dir / "seed0" / "timing.json").read_text())["resumed"] is True
    for name in ("summary.json", "model.pt"):
        assert (killed_dir / "seed0" / name).read_bytes() == \
            (tmp_path / "whole" / "seed0" / name).read_bytes(), name


def test_checkpoint_every_zero_writes_no_checkpoint_and_resume_restarts_a_seed(tmp_path):
    out = tmp_path / "r"
    assert run(out, "--checkpoint-every", "0") == 0
    assert not (out / "seed0" / "checkpoint.pt").exists()
    final = (out / "seed0" / "model.pt").read_bytes()
    (out / "seed0" / "summary.json").unlink()  # killed before any checkpoint: started afresh
    assert run(out, "--checkpoint-every", "0", "--resume") == 0
    assert (out / "seed0" / "model.pt").read_bytes() == final


def test_checkpoint_every_n_reaches_the_simulator(tmp_path, monkeypatch):
    """--checkpoint-every 2 of 3 rounds: checkpoints after rounds 2 and 3 (the last)."""
    from fedlib.core import simulation

    written, save = [], simulation.save_checkpoint

    def recording(directory, payload):
        written.append(payload["round"])
        return save(directory, payload)

    monkeypatch.setattr(simulation, "save_checkpoint", recording)
    out = tmp_path / "r"
    assert run(out, "--checkpoint-every", "2", rounds="3") == 0
    assert written == [2, 3]
    assert torch.load(out / "seed0" / "checkpoint.pt", weights_only=True)["round"] == 3
