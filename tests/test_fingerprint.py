"""FederatedDataset.fingerprint (what a run's data is) and pooled_test (what generalization
scores)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from fedlib.data import ArrayDataset, FederatedDataset, load_dataset
from fedlib.data.partitions import federate

TINY = {"scale": 0.02, "image_size": 28}


def _shared_test_federation() -> tuple[FederatedDataset, ArrayDataset]:
    g = torch.Generator().manual_seed(0)
    shared = ArrayDataset(torch.rand(5, 1, 4, 4, generator=g), torch.tensor([0, 1, 0, 1, 1]))
    train = {k: ArrayDataset(torch.rand(3, 1, 4, 4, generator=g), torch.tensor([0, 1, k % 2]))
             for k in range(3)}
    return FederatedDataset("shared", train, dict.fromkeys(range(3), shared), ("a", "b")), shared


def test_fingerprint_is_a_sha256_that_repeats_for_the_same_data():
    first = load_dataset("synthderm", seed=0, **TINY).fingerprint()
    again = load_dataset("synthderm", seed=0, **TINY).fingerprint()
    assert first == again
    assert len(first) == 64 and int(first, 16) >= 0


def test_fingerprint_is_the_same_in_another_process():
    code = ("from fedlib.data import load_dataset; "
            "print(load_dataset('synthderm', seed=0, scale=0.02, image_size=28).fingerprint())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == load_dataset("synthderm", seed=0, **TINY).fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"scale": 0.03},
        {"seed": 1},
        {"partition": "dirichlet", "num_clients": 4, "alpha": 0.5},
        {"partition": "dirichlet", "num_clients": 4, "alpha": 1.0},
        {"partition": "dirichlet", "num_clients": 4, "alpha": 0.5, "test_frac": 0.3},
    ],
)
def test_fingerprint_changes_with_scale_seed_alpha_and_split(change):
    base = load_dataset("synthderm", **{"seed": 0, **TINY}).fingerprint()
    if change.get("alpha") == 1.0 or "test_frac" in change:
        base = load_dataset("synthderm", **{**TINY, "partition": "dirichlet", "num_clients": 4,
                                            "alpha": 0.5}).fingerprint()
    assert load_dataset("synthderm", **{**TINY, **change}).fingerprint() != base


def test_fingerprint_sees_one_changed_pixel_and_one_changed_label():
    data, shared = _shared_test_federation()
    before = data.fingerprint()
    shared.images[0, 0, 0, 0] += 0.5
    pixel = data.fingerprint()
    assert pixel != before
    data.train[2].labels[0] = 1
    assert data.fingerprint() != pixel


def test_pooled_test_holds_a_shared_test_set_once():
    data, shared = _shared_test_federation()
    assert data.pooled_test() is shared
    assert len(data.pooled("test")) == 15  # the old pooled view repeats it per client


def test_pooled_test_is_the_union_of_distinct_client_splits():
    labels = torch.tensor([0, 1] * 10)
    pool = ArrayDataset(torch.arange(20.0).reshape(20, 1, 1, 1), labels)
    parts = [np.arange(0, 10), np.arange(10, 20)]
    data = federate(pool, parts, test_frac=0.2, seed=0)
    pooled = data.pooled_test()
    assert len(pooled) == len(data.test[0]) + len(data.test[1]) == 4
    np.testing.assert_array_equal(
        pooled.images.flatten(), torch.cat([data.test[0].images, data.test[1].images]).flatten()
    )


def test_pooled_test_is_the_global_test_set_when_given():
    labels = torch.tensor([0, 1] * 10)
    pool = ArrayDataset(torch.zeros(20, 1, 1, 1), labels)
    test = ArrayDataset(torch.ones(4, 1, 1, 1), torch.tensor([0, 1, 0, 1]))
    data = federate(pool, [np.arange(10), np.arange(10, 20)], test=test)
    assert data.pooled_test() is test


def test_pooled_test_of_only_empty_splits_names_the_dataset():
    empty = ArrayDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64))
    train = {0: ArrayDataset(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]))}
    data = FederatedDataset("hollow", train, {0: empty}, ("a", "b"))
    with pytest.raises(ValueError, match="every client's test split of 'hollow' is empty"):
        data.pooled_test()


def test_fingerprint_of_lazy_files_uses_names_and_sizes_without_decoding(tmp_path):
    from fedlib.data.real import ImageFileDataset

    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in paths:
        path.write_bytes(b"not decoded")  # a decode would fail: the digest must not decode
    lazy = ImageFileDataset(paths, [0, 1], image_size=4)
    data = FederatedDataset("files", {0: lazy}, {0: lazy.subset([1])}, ("a", "b"))
    before = data.fingerprint()
    assert data.fingerprint() == before
    paths[1].write_bytes(b"not decoded, longer")
    assert data.fingerprint() != before


def test_empty_clients_are_named_and_a_federation_needs_a_client():
    empty = ArrayDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64))
    full = ArrayDataset(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]))
    data = FederatedDataset("gaps", {0: full, 1: empty}, {0: empty, 1: full}, ("a", "b"))
    assert data.empty_clients("train") == [1] and data.empty_clients("test") == [0]
    with pytest.raises(ValueError, match="'none' has no clients"):
        FederatedDataset("none", {}, {}, ("a",))
