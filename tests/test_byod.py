"""Bring your own data: from_arrays, the .npz format, and the CLI on a .npz file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedlib.cli import main
from fedlib.data import from_arrays, load_dataset, load_npz


def _arrays(n=30, m=12, seed=0, classes=3, sites=(4, 7, 9)):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.random((n, 1, 8, 8)).astype(np.float32),
        "y_train": np.arange(n) % classes,
        "client": np.array(sites)[np.arange(n) % len(sites)],
        "x_test": rng.random((m, 1, 8, 8)).astype(np.float32),
        "y_test": np.arange(m) % classes,
    }


def test_from_arrays_maps_client_ids_and_shares_one_test_set():
    a = _arrays()
    data = from_arrays(**a)
    assert data.num_clients == 3 and data.client_names == ("client 4", "client 7", "client 9")
    assert data.class_names == ("class 0", "class 1", "class 2")
    # client 7 holds rows 1, 4, 7, ... (every third row from 1)
    np.testing.assert_array_equal(data.train[1].images.numpy(), a["x_train"][1::3])
    assert data.train[1].labels.tolist() == (np.arange(30)[1::3] % 3).tolist()
    assert data.test[0] is data.test[1] is data.test[2] is data.pooled_test()
    assert len(data.pooled_test()) == 12  # scored once, not once per client
    assert data.info["test_protocol"] == "shared"


def test_from_arrays_per_client_test_sets_and_names():
    a = _arrays()
    client_test = np.array([4, 4, 7, 7, 7, 9, 9, 9, 9, 4, 4, 4])
    data = from_arrays(**a, client_test=client_test, class_names=["a", "b", "c"],
                       client_names=["north", "east", "south"])
    assert [len(data.test[k]) for k in range(3)] == [5, 3, 4]
    assert data.client_names == ("north", "east", "south") and data.class_names == ("a", "b", "c")
    assert len(data.pooled_test()) == 12
    assert data.info["test_protocol"] == "per_client_split"


def test_from_arrays_accepts_tensors():
    a = {k: torch.as_tensor(v) for k, v in _arrays().items()}
    assert from_arrays(**a).num_clients == 3


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"x_train": np.zeros((30, 8, 8), np.float32)}, ValueError,
         r"'x_train' must have shape \(N, C, H, W\), got \(30, 8, 8\) \(add a channel axis"),
        ({"x_train": np.zeros((30, 1, 8, 8), np.uint8)}, TypeError,
         "'x_train' must be a float array, got dtype uint8 .divide uint8 images by 255"),
        ({"y_train": np.zeros(29, np.int64)}, ValueError,
         r"'y_train' must have shape \(30,\) to match 'x_train', got \(29,\)"),
        ({"y_train": np.full(30, 0.5)}, TypeError, "'y_train' must hold integers, got dtype"),
        ({"client": np.full(30, -1)}, ValueError, "'client' must be >= 0, got a minimum of -1"),
        ({"x_test": np.zeros((12, 3, 8, 8), np.float32)}, ValueError,
         r"'x_test' images are \(3, 8, 8\), 'x_train' images \(1, 8, 8\)"),
        ({"y_test": np.zeros((12, 1), np.int64)}, ValueError,
         r"'y_test' must have shape \(12,\) to match 'x_test', got \(12, 1\)"),
        ({"x_train": np.full((30, 1, 8, 8), np.nan, np.float32)}, ValueError,
         "'x_train' holds NaN or infinite values"),
    ],
)
def test_from_arrays_errors_name_the_key_shape_or_dtype(change, error, match):
    with pytest.raises(error, match=match):
        from_arrays(**{**_arrays(), **change})


def test_from_arrays_rejects_unknown_test_clients_and_too_few_class_names():
    with pytest.raises(ValueError, match=r"'client_test' holds client id\(s\) \[5\]"):
        from_arrays(**_arrays(), client_test=np.full(12, 5))
    with pytest.raises(ValueError, match="'y_train' holds class 2, but 'class_names' names only 2"):
        from_arrays(**_arrays(), class_names=["a", "b"])


def test_proportional_local_test_samples_the_shared_test_set():
    a = _arrays(n=30, m=30)
    a["y_train"] = np.array([0] * 18 + [1] * 12)  # client 4: rows 0,3,..: labels by row
    data = from_arrays(**a, local_test="proportional")
    for k in data.client_ids():
        counts = np.bincount(data.train[k].labels.numpy(), minlength=3)
        test_counts = np.bincount(data.test[k].labels.numpy(), minlength=3)
        # 10 test images per class; s = min over trained classes of 10 / n_c
        scale = min(10 / counts[c] for c in range(3) if counts[c])
        assert test_counts.tolist() == np.floor(scale * counts + 1e-9).astype(int).tolist()
    assert data.pooled_test() is data.info["global_test"] and len(data.pooled_test()) == 30


def test_npz_round_trip_and_key_errors(tmp_path):
    a = _arrays()
    path = tmp_path / "mine.npz"
    np.savez(path, **a, class_names=np.array(["a", "b", "c"]))
    data = load_npz(path)
    assert data.name == "mine" and data.class_names == ("a", "b", "c")
    assert data.fingerprint() == from_arrays(**a, class_names="abc", name="mine").fingerprint()
    del a["client"]
    np.savez(tmp_path / "nokey.npz", **a)
    with pytest.raises(ValueError, match=r"nokey.npz lacks the key\(s\) 'client'; found"):
        load_npz(tmp_path / "nokey.npz")
    np.savez(tmp_path / "extra.npz", **_arrays(), sites=np.zeros(3))
    with pytest.raises(ValueError, match=r"extra.npz holds unknown key\(s\) 'sites'"):
        load_npz(tmp_path / "extra.npz")
    np.savez(tmp_path / "grey.npz", **{**_arrays(), "x_train": np.zeros((30, 8, 8), np.float32)})
    with pytest.raises(ValueError, match=r"grey.npz: 'x_train' must have shape \(N, C, H, W\)"):
        load_npz(tmp_path / "grey.npz")
    np.savez(tmp_path / "obj.npz", **{**_arrays(), "y_test": np.array([object()] * 12)})
    with pytest.raises(ValueError, match="obj.npz holds an object array"):
        load_npz(tmp_path / "obj.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(ValueError, match="broken.npz is not a readable .npz"):
        load_npz(tmp_path / "broken.npz")


def test_load_dataset_reads_a_npz_and_repartitions_it_without_duplicating_the_test_set(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, **_arrays(n=60, m=12))
    sites = load_dataset(str(path))
    assert sites.num_clients == 3
    split = load_dataset(str(path), partition="dirichlet", num_clients=2, alpha=1.0, min_size=5)
    total = sum(len(split.train[k]) + len(split.test[k]) for k in range(2))
    assert total == 60 + 12  # the shared test set enters the pool once
    with pytest.raises(TypeError, match="a .npz file takes no option"):
        load_dataset(str(path), scale=0.5)


def test_cli_runs_on_a_npz_file_and_writes_the_usual_outputs(tmp_path, capsys):
    path = tmp_path / "data.npz"
    np.savez(path, **_arrays())
    out = tmp_path / "run"
    assert main(["run", "--dataset", str(path), "--method", "fedavg", "--set", "loss=bsm",
                 "--rounds", "3", "--seeds", "0", "--out", str(out), "--no-progress",
                 "--width", "2"]) == 0
    for name in ("history.csv", "clients.csv", "summary.json", "config.json", "model.pt"):
        assert (out / "seed0" / name).is_file()
    summary = json.loads((out / "seed0" / "summary.json").read_text())
    assert 0.0 <= summary["gen_balanced_accuracy"] <= 1.0
    config = json.loads((out / "seed0" / "config.json").read_text())
    assert config["dataset"]["name"] == str(path)
    assert config["model"]["kwargs"] == {"in_channels": 1, "num_classes": 3, "width": 2}


def test_cli_names_the_bad_key_of_a_npz_file(tmp_path):
    a = _arrays()
    a["y_train"] = a["y_train"][:-1]
    np.savez(tmp_path / "bad.npz", **a)
    with pytest.raises(SystemExit, match=r"fedlib run: load_npz: .*bad.npz: 'y_train' must have "
                                         r"shape \(30,\)"):
        main(["run", "--dataset", str(tmp_path / "bad.npz"), "--method", "fedavg",
              "--out", str(tmp_path / "x"), "--no-progress"])
    assert not (tmp_path / "x").exists()
