"""FedMix segmentation federations on fabricated HAM10000 and BUSI files (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_real_loaders import _busi_root, _ham_root

from fedlib.cli import main
from fedlib.data import load_dataset
from fedlib.data.real import real_segmentation_view
from fedlib.data.real.segmentation import busi_supervision_settings
from fedlib.data.segmentation import SegmentationDataset

SOURCES = ("rosendahl", "vidir_modern", "vienna_dias", "vidir_molemax")


def _ham_with_bright_lesions(tmp_path: Path) -> Path:
    """The loaders' fabricated HAM10000, each image white where its mask is (the left half)."""
    root = _ham_root(tmp_path)
    for path in (root / "ham10000").glob("HAM10000_images_part_*/*.jpg"):
        pixels = np.zeros((8, 12, 3), dtype=np.uint8)
        pixels[:, :6] = 255
        Image.fromarray(pixels).save(path)
    return root


def test_ham10000_view_has_fedmix_clients_sizes_and_aligned_binary_masks(tmp_path):
    fed = real_segmentation_view("ham10000", root=_ham_with_bright_lesions(tmp_path),
                                 image_size=16)
    assert fed.client_names == SOURCES
    assert fed.info["supervision"] == ("box", "box", "pixel", "box")
    # 5 images per source, split 80/20 by the loader: 4 train, 1 test
    assert [len(fed.train[k]) for k in range(4)] == [4, 4, 4, 4]
    assert [len(fed.test[k]) for k in range(4)] == [1, 1, 1, 1]
    for k in range(4):
        for part in (fed.train[k], fed.test[k]):
            assert isinstance(part, SegmentationDataset)
            masks, images = part.true_masks, part.images
            assert images.shape[1:] == (1, 16, 16) and masks.shape[1:] == (1, 16, 16)
            assert set(masks.unique().tolist()) == {0.0, 1.0}
            assert masks[:, 0, :, :8].eq(1).all() and masks[:, 0, :, 8:].eq(0).all()
            # the image is bright exactly where the mask is (one blurred column at the edge)
            agree = ((images[:, :1] > 0.5).float() == masks).float().mean().item()
            assert agree >= 15 / 16
    rgb = real_segmentation_view("ham10000", root=tmp_path, image_size=16, grayscale=False)
    assert rgb.train[0].images.shape[1:] == (3, 16, 16)


def test_weak_training_items_never_carry_the_true_mask(tmp_path):
    fed = real_segmentation_view("ham10000", root=_ham_with_bright_lesions(tmp_path),
                                 image_size=16)
    for k, level in enumerate(fed.info["supervision"]):
        for item in fed.train[k]:
            assert ("mask" in item) == (level == "pixel")
            if level == "box":  # the filled box covers the lesion
                assert (item["target"] >= fed.train[k].true_masks[int(item["index"])]).all()
        for item in fed.test[k]:
            assert torch.equal(item["mask"], fed.test[k].true_masks[int(item["index"])])


def test_busi_view_deals_one_site_into_clients_by_class(tmp_path):
    root = _busi_root(tmp_path)  # 6 benign, 6 malignant, 6 normal
    fed = real_segmentation_view("busi", root=root, image_size=16)
    assert fed.client_names == ("BUSI-1", "BUSI-2", "BUSI-3")
    assert fed.info["supervision"] == ("image", "box", "pixel")
    assert fed.class_names == ("benign", "malignant")
    # 12 lesion images, stratified 20 % test (3), the rest dealt 3 ways per class
    train_counts = np.array(fed.info["train_counts"])
    test_counts = np.array(fed.info["test_counts"])
    assert train_counts.sum() == 9 and test_counts.sum() == 3
    assert (train_counts.max(axis=0) - train_counts.min(axis=0) <= 1).all()
    assert fed.train[0][0]["target"].tolist() == [1.0]  # image level: a lesion is present
    assert fed.train[0].images.shape[1:] == (1, 16, 16)
    again = real_segmentation_view("busi", root=root, image_size=16)
    assert again.fingerprint() == fed.fingerprint()


def test_busi_normal_frames_go_to_the_unlabeled_clients(tmp_path):
    fed = real_segmentation_view("busi", "pixel_only", root=_busi_root(tmp_path),
                                 image_size=16)
    assert fed.info["supervision"] == ("none", "none", "pixel")
    assert fed.class_names == ("benign", "malignant", "normal")
    counts = np.array(fed.info["train_counts"])
    assert counts[:, 2].tolist() == [3, 3, 0]
    assert counts[:, :2].sum(axis=1).tolist() == [3, 3, 3]  # 9 lesion images dealt 3 ways
    assert len(fed.train[0]) == 6 and len(fed.test[0]) == 1
    assert "mask" not in fed.train[0][0]


def test_busi_settings_for_other_client_counts():
    assert busi_supervision_settings(3)["fedmix"] == ("image", "box", "pixel")
    assert busi_supervision_settings(4)["fedmix"] == ("image", "image", "box", "pixel")
    assert busi_supervision_settings(1) == {"fedmix": ("pixel",), "full": ("pixel",),
                                           "pixel_only": ("pixel",)}


def test_registry_names_and_bad_inputs(tmp_path):
    root = _busi_root(tmp_path)
    fed = load_dataset("busi_seg", root=root, image_size=16, busi_clients=2,
                       supervision="full")
    assert fed.num_clients == 2 and fed.info["supervision"] == ("pixel", "pixel")
    with pytest.raises(ValueError, match="'name' must be one of"):
        real_segmentation_view("isic2019", root=root)
    with pytest.raises(ValueError, match="'busi_clients' must be an int >= 1"):
        real_segmentation_view("busi", root=root, busi_clients=0)
    with pytest.raises(ValueError, match=r"'supervision' must give one level per client \(3\)"):
        real_segmentation_view("busi", ("pixel", "box"), root=root)
    with pytest.raises(TypeError, match="'grayscale' must be a bool"):
        real_segmentation_view("ham10000", root=root, grayscale=1)


def test_missing_files_name_the_data_script(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_scripts/ham10000\.py"):
        real_segmentation_view("ham10000", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data_scripts/busi\.py"):
        real_segmentation_view("busi", root=tmp_path)


def test_cli_fedmix_run_on_ham10000_seg_reports_dice_per_client(tmp_path):
    root = _ham_with_bright_lesions(tmp_path)
    out = tmp_path / "run"
    assert main(["run", "--method", "fedmix", "--dataset", "ham10000_seg", "--root", str(root),
                 "--rounds", "1", "--seeds", "0", "--width", "4", "--no-progress",
                 "--data-option", "image_size=16", "--out", str(out)]) == 0
    summary = json.loads((out / "seed0" / "summary.json").read_text())
    assert set(summary["gen_dice_per_client"]) == set(SOURCES)
    assert all(0 <= v <= 1 for v in summary["gen_dice_per_client"].values())


def test_cli_without_prepared_data_is_one_line_with_the_data_script(tmp_path):
    with pytest.raises(SystemExit, match=r"HAM10000 metadata CSV not found.*data_scripts/"
                                         r"ham10000\.py") as info:
        main(["run", "--method", "fedmix", "--dataset", "ham10000_seg", "--root",
              str(tmp_path), "--rounds", "1", "--no-progress", "--out", str(tmp_path / "run")])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("method", "supervision"), [("fedst", "pixel_only"), ("local", "full")])
def test_cli_runs_busi_seg(tmp_path, method, supervision):
    out = tmp_path / "run"
    assert main(["run", "--method", method, "--dataset", "busi_seg", "--root",
                 str(_busi_root(tmp_path)), "--rounds", "1", "--seeds", "0", "--width", "4",
                 "--no-progress", "--data-option", "image_size=16", "--data-option",
                 f"supervision={supervision}", "--out", str(out)]) == 0
    summary = json.loads((out / "seed0" / "summary.json").read_text())
    assert set(summary["gen_dice_per_client"]) == {"BUSI-1", "BUSI-2", "BUSI-3"}
