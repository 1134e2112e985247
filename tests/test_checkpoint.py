"""Checkpoint files: atomic, never redirected by a planted link, clear errors when damaged."""

from __future__ import annotations

import os

import pytest
import torch

from fedlib._atomic import atomic_write_text
from fedlib.core.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights

PAYLOAD = {"round": 3, "weights": {"w": torch.arange(4.0)}}


def test_checkpoint_round_trips(tmp_path):
    save_checkpoint(tmp_path, PAYLOAD)
    loaded = load_checkpoint(tmp_path)
    assert loaded["round"] == 3
    torch.testing.assert_close(loaded["weights"]["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp file left


@pytest.mark.parametrize("planted", ["checkpoint.pt.tmp", "checkpoint.pt"])
def test_a_planted_link_is_replaced_not_written_through(tmp_path, planted):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(victim, run / planted)
    save_checkpoint(run, PAYLOAD)
    assert victim.read_text() == "precious"
    assert load_checkpoint(run)["round"] == 3
    assert (run / "checkpoint.pt").is_file() and not (run / "checkpoint.pt").is_symlink()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def broken(stream):
        stream.write(b"half")
        raise OSError("disk full")

    from fedlib._atomic import atomic_write

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_an_empty_checkpoint_says_it_is_empty(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoint.pt is empty \(0 bytes\).*interrupted"):
        load_checkpoint(tmp_path)


def test_a_truncated_checkpoint_says_it_is_truncated(tmp_path):
    save_checkpoint(tmp_path, PAYLOAD)
    path = tmp_path / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"is truncated .*\({len(data) // 2} bytes"):
        load_checkpoint(tmp_path)


def test_weights_files_load_weights_only(tmp_path):
    path = save_weights(tmp_path / "model.pt", {"w": torch.ones(2)})
    torch.testing.assert_close(load_weights(path)["w"], torch.ones(2))
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_weights(tmp_path / "absent.pt")
