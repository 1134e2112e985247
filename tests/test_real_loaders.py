"""Real-data loaders on tiny files fabricated in each native format (no network)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.model_selection import train_test_split

from fedlib.data.base import ArrayDataset
from fedlib.data.real import (
    DataFormatError,
    ImageFileDataset,
    UnsafePickleError,
    busi_dataset,
    convert_pickled_split,
    data_root,
    federate_by_indices,
    federate_medmnist,
    load_busi,
    load_ham10000,
    load_isic2019,
    load_medmnist,
    load_pickled_split,
    load_rsna_ich,
    paired_folder_dataset,
    read_client_split,
    read_dicom_windowed,
    read_ich_labels,
    read_image,
    resize_shorter_side,
    shades_of_grey,
    window_ct,
)

# ----------------------------------------------------------------------------- data root


def test_data_root_prefers_argument_then_env_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDLIB_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.setenv("FEDLIB_DATA_DIR", "")
    assert data_root() == tmp_path / "home" / ".cache" / "fedlib"
    monkeypatch.delenv("FEDLIB_DATA_DIR")
    assert data_root() == tmp_path / "home" / ".cache" / "fedlib"
    assert data_root("~/x") == tmp_path / "home" / "x"


def test_data_root_rejects_bad_argument():
    with pytest.raises(TypeError, match="'path' must be a str"):
        data_root(3)
    with pytest.raises(ValueError, match="'path' must not be empty"):
        data_root("")


# ----------------------------------------------------------------------------- preprocessing


def test_window_ct_maps_level_and_edges():
    hu = np.array([-1000.0, 0.0, 20.0, 40.0, 80.0, 500.0])
    np.testing.assert_allclose(window_ct(hu, 40, 80), [0.0, 0.0, 0.25, 0.5, 1.0, 1.0])
    # level 50, width 100: 0 -> 0, 50 -> 0.5, 100 -> 1
    np.testing.assert_allclose(window_ct(np.array([0.0, 50.0, 100.0]), 50, 100), [0, 0.5, 1])
    with pytest.raises(ValueError, match="'width' must be a float > 0"):
        window_ct(hu, 40, 0)


def test_shades_of_grey_turns_a_constant_colour_into_grey():
    image = np.empty((4, 5, 3), dtype=np.uint8)
    image[...] = (200, 100, 50)
    # ||(200, 100, 50)|| / sqrt(3) = sqrt(52500 / 3) = 132.2876
    out = shades_of_grey(image, power=6)
    assert out.dtype == np.uint8
    assert (out == 132).all()
    out_float = shades_of_grey(image.astype(np.float64), power=6)
    np.testing.assert_allclose(out_float, np.sqrt(52500 / 3), rtol=1e-12)


def test_shades_of_grey_leaves_a_grey_illuminant_unchanged_and_validates():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(1, 255, size=(6, 6, 1)), 3, axis=2).astype(np.float64)
    np.testing.assert_allclose(shades_of_grey(grey), grey, rtol=1e-12)
    with pytest.raises(ValueError, match=r"'image' must have shape \(H, W, 3\)"):
        shades_of_grey(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="'power' must be a float > 0"):
        shades_of_grey(grey, power=0)


def test_resize_shorter_side_keeps_aspect_ratio():
    image = Image.new("RGB", (300, 200))
    assert resize_shorter_side(image, 224).size == (336, 224)  # ratio 1.12
    assert resize_shorter_side(Image.new("RGB", (100, 250)), 50).size == (50, 125)


# ----------------------------------------------------------------------------- safe image reading


def test_read_image_refuses_corrupt_truncated_and_huge_files(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(good)
    assert read_image(good).size == (40, 30)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(DataFormatError, match="garbage.jpg: corrupt or unreadable image"):
        read_image(garbage)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:300])
    with pytest.raises(DataFormatError, match="truncated.png"):
        read_image(truncated)
    with pytest.raises(DataFormatError, match="good.jpg: image of 40 x 30 pixels exceeds"):
        read_image(good, max_pixels=1000)
    with pytest.raises(FileNotFoundError, match="absent.png"):
        read_image(tmp_path / "absent.png")


def test_image_file_dataset_scales_8_and_16_bit_files(tmp_path):
    Image.fromarray(np.array([[0, 65535], [32768, 0]], dtype=np.uint16)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 255], [51, 0]], dtype=np.uint8)).save(tmp_path / "b.png")
    data = ImageFileDataset([tmp_path / "a.png", tmp_path / "b.png"], [0, 1], channels=1)
    np.testing.assert_allclose(data[0][0].numpy(), [[[0.0, 1.0], [32768 / 65535, 0.0]]], rtol=1e-6)
    np.testing.assert_allclose(data[1][0].numpy(), [[[0.0, 1.0], [0.2, 0.0]]], rtol=1e-6)
    assert data[1][1].item() == 1


def test_image_file_dataset_labels_need_no_decoding(tmp_path):
    paths = [tmp_path / f"missing_{i}.png" for i in range(4)]  # never read
    dataset = ImageFileDataset(paths, [0, 2, 2, 1], image_size=4)
    fed = federate_by_indices("t", dataset, [[0, 1], [2, 3]], dataset,
                              client_test_indices=[[0], [3]], class_names=("a", "b", "c"))
    np.testing.assert_array_equal(fed.class_counts("train"), [[1, 0, 1], [0, 1, 1]])
    np.testing.assert_array_equal(fed.class_counts("test"), [[1, 0, 0], [0, 1, 0]])
    with pytest.raises(FileNotFoundError, match="missing_0.png"):
        dataset[0]
    with pytest.raises(ValueError, match="'channels' must be one of 1, 3"):
        ImageFileDataset(paths, [0, 0, 0, 0], channels=2)
    with pytest.raises(ValueError, match="'labels' must have one entry per path"):
        ImageFileDataset(paths, [0, 0])
    with pytest.raises(ValueError, match="'image_size' must be an int >= 1"):
        ImageFileDataset(paths, [0, 0, 0, 0], image_size=0)


# ----------------------------------------------------------------------------- MedMNIST


def _medmnist_arrays(rgb: bool):
    rng = np.random.default_rng(1)
    shape = (3, 4, 4, 3) if rgb else (3, 4, 4)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        images = rng.integers(0, 256, size=(n, *shape[1:]), dtype=np.uint8)
        images[0, 0, 0] = 51  # 51 / 255 = 0.2
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(n, 1).astype(np.uint8)
    return arrays


def test_load_medmnist_grey_and_rgb(tmp_path):
    grey = tmp_path / "breastmnist.npz"
    np.savez(grey, **_medmnist_arrays(rgb=False))
    splits = load_medmnist(grey)
    assert set(splits) == {"train", "val", "test"}
    train = splits["train"]
    assert train.images.shape == (6, 1, 4, 4) and train.images.dtype == torch.float32
    assert train.images[0, 0, 0, 0].item() == pytest.approx(0.2)
    assert train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    rgb_arrays = _medmnist_arrays(rgb=True)
    np.savez(tmp_path / "rgb.npz", **rgb_arrays)
    rgb = load_medmnist(tmp_path / "rgb.npz")["test"]
    assert rgb.images.shape == (3, 3, 4, 4)
    # channel c of the tensor is the last axis c of the file
    np.testing.assert_allclose(rgb.images[1, 2].numpy(),
                               rgb_arrays["test_images"][1, :, :, 2] / 255)


def test_load_medmnist_by_name_under_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDLIB_DATA_DIR", str(tmp_path))
    (tmp_path / "medmnist").mkdir()
    np.savez(tmp_path / "medmnist" / "dermamnist_64.npz", **_medmnist_arrays(rgb=True))
    assert len(load_medmnist("dermamnist", size=64)["val"]) == 2
    with pytest.raises(FileNotFoundError, match="dermamnist.npz.*data_scripts/medmnist.py"):
        load_medmnist("dermamnist")


def test_load_medmnist_errors_name_the_file_and_the_problem(tmp_path):
    arrays = _medmnist_arrays(rgb=False)
    wrong = {("x_" + k if k.startswith("val") else k): v for k, v in arrays.items()}
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(DataFormatError, match=r"wrong.npz: missing key\(s\) 'val_images', "
                                              r"'val_labels'; found"):
        load_medmnist(tmp_path / "wrong.npz")
    multi = dict(arrays, train_labels=np.zeros((6, 14), dtype=np.uint8))
    np.savez(tmp_path / "multi.npz", **multi)
    with pytest.raises(DataFormatError, match="multi.npz: 'train_labels' must have shape"):
        load_medmnist(tmp_path / "multi.npz")
    short = dict(arrays, test_labels=np.zeros((2, 1), dtype=np.uint8))
    np.savez(tmp_path / "short.npz", **short)
    with pytest.raises(DataFormatError, match="short.npz: 'test_labels' has 2 rows, the images 3"):
        load_medmnist(tmp_path / "short.npz")
    pickled = dict(arrays, train_images=np.array([object()] * 6, dtype=object))
    np.savez(tmp_path / "pickled.npz", **pickled)
    with pytest.raises(DataFormatError, match="pickled.npz: holds arrays that would need"):
        load_medmnist(tmp_path / "pickled.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataFormatError, match="corrupt.npz: not a readable .npz"):
        load_medmnist(tmp_path / "corrupt.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        load_medmnist(tmp_path / "absent.npz")


def test_federate_by_indices_assigns_clients_and_checks_indices(tmp_path):
    path = tmp_path / "organamnist.npz"
    np.savez(path, **_medmnist_arrays(rgb=False))
    fed = federate_medmnist(path, [np.array([0, 3]), np.array([1, 2, 4])])
    assert fed.num_clients == 2 and fed.class_names[:2] == ("bladder", "femur-left")
    assert fed.train[1].labels.tolist() == [1, 2, 1]
    assert len(fed.test[0]) == len(fed.test[1]) == 3  # whole test split for every client
    splits = load_medmnist(path)
    with pytest.raises(ValueError, match="assign every index at most once; client 1"):
        federate_by_indices("t", splits["train"], [[0, 1], [1]], splits["test"],
                            class_names="abc")
    with pytest.raises(ValueError, match=r"outside 0..5"):
        federate_by_indices("t", splits["train"], [[0, 6]], splits["test"], class_names="abc")
    with pytest.raises(ValueError, match="'test_split' must be one of"):
        federate_medmnist(path, [[0]], test_split="train")
    np.savez(tmp_path / "pneumoniamnist.npz", **_medmnist_arrays(rgb=False))  # labels 0..2
    with pytest.raises(DataFormatError, match="labels go up to 2, but pneumoniamnist has 2"):
        federate_medmnist(tmp_path / "pneumoniamnist.npz", [[0]])


# ----------------------------------------------------------------------------- ISIC-2019

ISIC_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def _make_isic(root: Path) -> dict[str, tuple[int, int, str]]:
    """Images: id -> (class, centre, fold). Writes the CSVs and 10 x 6 JPEGs."""
    items = {
        "ISIC_0000001": (0, 0, "train"), "ISIC_0000002": (1, 0, "train"),
        "ISIC_0000003": (2, 0, "test"), "ISIC_0000004": (7, 1, "train"),
        "ISIC_0000005_downsampled": (1, 1, "test"), "ISIC_0000006": (4, 1, "train"),
    }
    (root / "ISIC_2019_Training_Input").mkdir(parents=True)
    truth, split = [], []
    for k, (image, (label, centre, fold)) in enumerate(items.items()):
        onehot = [1.0 if c == label else 0.0 for c in range(9)]
        truth.append([image, *onehot])
        split.append([image, *onehot, label, centre, fold, f"{fold}_{centre}"])
        Image.new("RGB", (10, 6), (20 * k, 100, 200)).save(
            root / "ISIC_2019_Training_Input" / f"{image}.jpg", quality=95)
    truth.append(["ISIC_0009999", *([0.0] * 8), 1.0])  # an UNK image, not in the split
    pd.DataFrame(truth, columns=["image", *ISIC_COLUMNS]).to_csv(
        root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    pd.DataFrame(split, columns=["image", *ISIC_COLUMNS, "target", "center", "fold", "fold2"]
                 ).to_csv(root / "train_test_split", index=False)
    return items


def test_load_isic2019_clients_labels_and_images(tmp_path):
    items = _make_isic(tmp_path)
    fed = load_isic2019(dataset_dir=tmp_path, image_size=8)
    assert fed.num_clients == 2 and fed.client_names == ("BCN", "HAM_vidir_molemax")
    assert fed.class_names == ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
    assert fed.train[0].labels.tolist() == [0, 1] and fed.test[0].labels.tolist() == [2]
    assert fed.train[1].labels.tolist() == [7, 4] and fed.test[1].labels.tolist() == [1]
    image, label = fed.test[1][0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert label.item() == items["ISIC_0000005_downsampled"][0]
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert image[2].mean().item() == pytest.approx(200 / 255, abs=0.03)  # blue channel
    native = load_isic2019(dataset_dir=tmp_path, image_size=None)
    assert native.train[0][0][0].shape == (3, 6, 10)


def test_load_isic2019_errors_name_file_and_problem(tmp_path):
    _make_isic(tmp_path)
    split_path = tmp_path / "train_test_split"
    split = pd.read_csv(split_path)
    split.drop(columns=["center"]).to_csv(tmp_path / "no_centre.csv", index=False)
    with pytest.raises(DataFormatError, match=r"no_centre.csv: missing column\(s\) 'center'"):
        load_isic2019(dataset_dir=tmp_path, split_file=tmp_path / "no_centre.csv")
    split.assign(fold=["train", "valid", "test", "train", "test", "train"]).to_csv(
        tmp_path / "bad_fold.csv", index=False)
    with pytest.raises(DataFormatError, match="bad_fold.csv: column 'fold' must hold"):
        load_isic2019(dataset_dir=tmp_path, split_file=tmp_path / "bad_fold.csv")
    truth = pd.read_csv(tmp_path / "ISIC_2019_Training_GroundTruth.csv")
    truth.loc[0, "NV"] = 1.0
    truth.to_csv(tmp_path / "two_hot.csv", index=False)
    with pytest.raises(DataFormatError, match=r"two_hot.csv: 1 row\(s\) are not one-hot"):
        load_isic2019(dataset_dir=tmp_path, groundtruth_csv=tmp_path / "two_hot.csv")
    with pytest.raises(FileNotFoundError, match="ISIC-2019 ground-truth CSV not found"):
        load_isic2019(dataset_dir=tmp_path, groundtruth_csv=tmp_path / "absent.csv")
    (tmp_path / "ISIC_2019_Training_Input" / "ISIC_0000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 ISIC-2019 image file\(s\) not found: "
                                                r".*ISIC_0000003.jpg"):
        load_isic2019(dataset_dir=tmp_path)


def test_isic2019_corrupt_image_fails_on_read_naming_the_file(tmp_path):
    _make_isic(tmp_path)
    (tmp_path / "ISIC_2019_Training_Input" / "ISIC_0000002.jpg").write_bytes(b"\xff\xd8broken")
    fed = load_isic2019(dataset_dir=tmp_path, image_size=8)  # labels load without decoding
    assert fed.train[0].labels.tolist() == [0, 1]
    with pytest.raises(DataFormatError, match="ISIC_0000002.jpg: corrupt or unreadable image"):
        fed.train[0][1]


# ----------------------------------------------------------------------------- HAM10000


def _make_ham(root: Path) -> pd.DataFrame:
    rows = []
    sources = ["rosendahl", "vidir_modern", "vienna_dias", "vidir_molemax"]
    dx = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    for s, source in enumerate(sources):
        for j in range(5):
            number = 100 * s + j
            rows.append([f"HAM_{number // 2:07d}", f"ISIC_{number:07d}", dx[(s + j) % 7],
                         "histo", 50.0, "male", "back", source])
    meta = pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx", "dx_type", "age", "sex",
                                       "localization", "dataset"])
    meta.to_csv(root / "HAM10000_metadata.csv", index=False)
    for folder in ("HAM10000_images_part_1", "HAM10000_images_part_2",
                   "HAM10000_segmentations_lesion_tschandl"):
        (root / folder).mkdir()
    for k, image_id in enumerate(meta["image_id"]):
        part = "HAM10000_images_part_1" if k % 2 else "HAM10000_images_part_2"
        Image.new("RGB", (12, 8), (150, 90, 60)).save(root / part / f"{image_id}.jpg")
        mask = np.zeros((8, 12), dtype=np.uint8)
        mask[:, :6] = 255  # left half is lesion
        Image.fromarray(mask).save(
            root / "HAM10000_segmentations_lesion_tschandl" / f"{image_id}_segmentation.png")
    return meta


def test_load_ham10000_sources_split_and_masks(tmp_path):
    meta = _make_ham(tmp_path)
    fed = load_ham10000(dataset_dir=tmp_path, image_size=(4, 6), channels=1)
    assert fed.client_names == ("rosendahl", "vidir_modern", "vienna_dias", "vidir_molemax")
    for k, source in enumerate(fed.client_names):
        ids = np.flatnonzero(meta["dataset"].to_numpy() == source)
        expected_train, expected_test = train_test_split(ids, test_size=0.2, random_state=30448)
        assert [p.stem for p in fed.train[k].paths] == meta["image_id"][expected_train].tolist()
        assert [p.stem for p in fed.test[k].paths] == meta["image_id"][expected_test].tolist()
    assert len(fed.train[0]) == 4 and len(fed.test[0]) == 1
    labels = {c: i for i, c in enumerate(fed.class_names)}
    first = fed.train[2]
    assert first.labels[0].item() == labels[meta.set_index("image_id").loc[first.paths[0].stem,
                                                                           "dx"]]
    image, _ = first[0]
    assert image.shape == (1, 4, 6)
    mask = first.load_mask(0)
    expected = torch.zeros(1, 4, 6)
    expected[..., :3] = 1.0
    assert torch.equal(mask, expected)
    arrays = first.materialize()
    assert isinstance(arrays, ArrayDataset)
    assert arrays.masks.shape == (4, 1, 4, 6) and arrays.images.shape == (4, 1, 4, 6)


def test_load_ham10000_lesion_split_keeps_lesions_together(tmp_path):
    meta = _make_ham(tmp_path)
    fed = load_ham10000(dataset_dir=tmp_path, split_by="lesion", with_masks=False, image_size=4)
    lesion = meta.set_index("image_id")["lesion_id"]
    for k in fed.client_ids():
        train_lesions = {lesion[p.stem] for p in fed.train[k].paths}
        test_lesions = {lesion[p.stem] for p in fed.test[k].paths}
        assert not train_lesions & test_lesions
        assert len(fed.train[k]) + len(fed.test[k]) == 5


def test_load_ham10000_errors(tmp_path):
    meta = _make_ham(tmp_path)
    meta.drop(columns=["dataset"]).to_csv(tmp_path / "no_source.csv", index=False)
    with pytest.raises(DataFormatError, match=r"no_source.csv: missing column\(s\) 'dataset'"):
        load_ham10000(dataset_dir=tmp_path, metadata_csv=tmp_path / "no_source.csv")
    meta.assign(dx="xyz").to_csv(tmp_path / "bad_dx.csv", index=False)
    with pytest.raises(DataFormatError, match="bad_dx.csv: column 'dx' holds unknown"):
        load_ham10000(dataset_dir=tmp_path, metadata_csv=tmp_path / "bad_dx.csv")
    with pytest.raises(ValueError, match="'split_by' must be one of 'image', 'lesion'"):
        load_ham10000(dataset_dir=tmp_path, split_by="patient")
    with pytest.raises(ValueError, match="'sources' must be a non-empty subset"):
        load_ham10000(dataset_dir=tmp_path, sources=("msk",))
    mask = tmp_path / "HAM10000_segmentations_lesion_tschandl" / "ISIC_0000101_segmentation.png"
    mask.unlink()
    with pytest.raises(FileNotFoundError, match=r"1 HAM10000 mask file\(s\) not found: .*"
                                                r"ISIC_0000101_segmentation.png"):
        load_ham10000(dataset_dir=tmp_path)
    assert load_ham10000(dataset_dir=tmp_path, with_masks=False).num_clients == 4
    next(tmp_path.glob("HAM10000_images_part_*/ISIC_0000300.jpg")).unlink()
    with pytest.raises(FileNotFoundError, match="ISIC_0000300.jpg"):
        load_ham10000(dataset_dir=tmp_path, with_masks=False)


# ----------------------------------------------------------------------------- BUSI


def _save_mask(path: Path, box: tuple[int, int, int, int] | None, size=(8, 8)):
    mask = np.zeros(size, dtype=np.uint8)
    if box is not None:
        y0, y1, x0, x1 = box
        mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask).save(path)


def _make_busi(root: Path) -> Path:
    folder = root / "busi" / "Dataset_BUSI_with_GT"
    for name in ("benign", "malignant", "normal"):
        (folder / name).mkdir(parents=True)
    for n in (1, 2, 10):
        grey = (n * 10, n * 10, n * 10)
        Image.new("RGB", (8, 8), grey).save(folder / "benign" / f"benign ({n}).png")
        _save_mask(folder / "benign" / f"benign ({n})_mask.png", (0, 2, 0, 2))
    _save_mask(folder / "benign" / "benign (2)_mask_1.png", (6, 8, 6, 8))  # second lesion
    for n in (1, 2):
        Image.new("L", (8, 8), 90).save(folder / "malignant" / f"malignant ({n}).png")
        _save_mask(folder / "malignant" / f"malignant ({n})_mask.png", (2, 6, 2, 6))
        Image.new("L", (8, 8), 30).save(folder / "normal" / f"normal ({n}).png")
        _save_mask(folder / "normal" / f"normal ({n})_mask.png", None)
    return folder


def test_busi_dataset_orders_naturally_and_merges_extra_masks(tmp_path):
    _make_busi(tmp_path)
    data = busi_dataset(tmp_path, image_size=None)
    assert [p.name for p in data.paths[:3]] == ["benign (1).png", "benign (2).png",
                                                "benign (10).png"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    merged = data.load_mask(1)
    expected = torch.zeros(1, 8, 8)
    expected[0, :2, :2] = 1.0
    expected[0, 6:, 6:] = 1.0
    assert torch.equal(merged, expected)
    assert data.load_mask(5).sum().item() == 0.0  # normal: empty mask
    image, label = data[0]
    assert image.shape == (1, 8, 8) and image[0, 0, 0].item() == pytest.approx(10 / 255)
    assert label.item() == 0


def test_load_busi_is_one_stratified_site(tmp_path):
    _make_busi(tmp_path)
    fed = load_busi(tmp_path, test_fraction=0.4, image_size=4)
    assert fed.num_clients == 1 and fed.class_names == ("benign", "malignant")
    assert len(fed.train[0]) + len(fed.test[0]) == 5
    assert sorted(fed.test[0].labels.tolist()) == [0, 1]  # stratified: one of each
    assert fed.train[0][0][0].shape == (1, 4, 4)


def test_busi_layout_errors(tmp_path):
    folder = _make_busi(tmp_path)
    _save_mask(folder / "malignant" / "malignant (7)_mask.png", None)
    with pytest.raises(DataFormatError, match=r"malignant: mask file\(s\) without an image, e.g. "
                                              r"'malignant \(7\)_mask.png'"):
        busi_dataset(tmp_path)
    (folder / "malignant" / "malignant (7)_mask.png").unlink()
    (folder / "normal" / "normal (2)_mask.png").unlink()
    with pytest.raises(DataFormatError, match=r"image\(s\) without a '_mask' file, e.g. "
                                              r"'normal \(2\).png'"):
        busi_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="BUSI class folder 'benign' not found"):
        busi_dataset(tmp_path / "elsewhere")


def test_paired_folder_dataset_pairs_by_stem(tmp_path):
    (tmp_path / "original").mkdir()
    (tmp_path / "GT").mkdir()
    for n in (1, 2):
        Image.new("L", (8, 8), 50).save(tmp_path / "original" / f"{n:06d}.png")
        _save_mask(tmp_path / "GT" / f"{n:06d}.png", (0, 4, 0, 8))
    data = paired_folder_dataset(tmp_path / "original", tmp_path / "GT", image_size=4)
    assert len(data) == 2 and data.load_mask(1).sum().item() == 8.0
    (tmp_path / "GT" / "000002.png").unlink()
    with pytest.raises(DataFormatError, match="image '000002.png' has no mask"):
        paired_folder_dataset(tmp_path / "original", tmp_path / "GT")


# ----------------------------------------------------------------------------- RSNA-ICH


def _write_dicom(path: Path, stored: np.ndarray, slope: float = 1.0, intercept: float = -1024.0):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = stored.astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)


SUBTYPES = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any"]


def _make_ich(root: Path) -> None:
    positives = {  # slice -> positive subtypes
        "ID_aaa": {"epidural"}, "ID_bbb": {"subdural"}, "ID_ccc": {"subarachnoid"},
        "ID_ddd": {"intraventricular"}, "ID_two": {"epidural", "subdural"}, "ID_none": set(),
    }
    rows = []
    for image, positive in positives.items():
        for subtype in SUBTYPES:
            flag = int(subtype in positive or (subtype == "any" and bool(positive)))
            rows.append([f"{image}_{subtype}", flag])
    rows.append(rows[0])  # the Kaggle file holds exact duplicates
    pd.DataFrame(rows, columns=["ID", "Label"]).to_csv(root / "stage_2_train.csv", index=False)
    (root / "stage_2_train").mkdir()
    # stored 1024 + HU: HU 0, 40 / 80, 20 -> window (40, 80): 0, 0.5 / 1, 0.25
    stored = np.array([[1024, 1064], [1104, 1044]])
    for image in positives:
        _write_dicom(root / "stage_2_train" / f"{image}.dcm", stored)
    split = {"train": {"0": {"image": ["ID_aaa", "bbb"], "label": [0, 4]},
                       "1": {"image": ["ID_ccc"], "label": [3]}},
             "test": {"0": {"image": ["ID_ddd"], "label": [2]},
                      "1": {"image": ["ID_bbb.dcm"], "label": [4]}}}
    (root / "split.json").write_text(json.dumps(split))


def test_read_ich_labels_and_single_label_subset(tmp_path):
    _make_ich(tmp_path)
    table = read_ich_labels(tmp_path / "stage_2_train.csv")
    assert table.loc["ID_two", "epidural"] == 1 and table.loc["ID_two", "subdural"] == 1
    from fedlib.data.real import ich_single_label

    single = ich_single_label(table)
    assert single.to_dict() == {"ID_aaa": 0, "ID_bbb": 4, "ID_ccc": 3, "ID_ddd": 2}


def test_load_rsna_ich_from_dicom_with_windowing(tmp_path):
    _make_ich(tmp_path)
    fed = load_rsna_ich(dataset_dir=tmp_path, split_file=tmp_path / "split.json", image_size=None)
    assert fed.class_names == ("EDH", "IPH", "IVH", "SAH", "SDH")
    assert fed.client_names == ("client 0", "client 1")
    assert fed.train[0].labels.tolist() == [0, 4] and fed.test[1].labels.tolist() == [4]
    assert fed.info["image_format"] == "dicom"
    image, label = fed.train[0][0]
    assert label.item() == 0
    np.testing.assert_allclose(image.numpy(), [[[0.0, 0.5], [1.0, 0.25]]], rtol=1e-6)
    wide = load_rsna_ich(dataset_dir=tmp_path, split_file=tmp_path / "split.json", image_size=None,
                         window=(40, 160))  # low edge -40: HU 0 -> 0.25, 80 -> 0.75
    np.testing.assert_allclose(wide.train[0][0][0].numpy(), [[[0.25, 0.5], [0.75, 0.375]]],
                               rtol=1e-6)
    assert pickle.loads(pickle.dumps(fed.train[0])).paths == fed.train[0].paths  # worker-safe


def test_read_dicom_windowed_applies_rescale_slope(tmp_path):
    _write_dicom(tmp_path / "s.dcm", np.array([[0, 10], [20, 30]]), slope=2.0, intercept=0.0)
    # HU 0, 20, 40, 60 -> (HU - 0) / 80
    np.testing.assert_allclose(np.asarray(read_dicom_windowed(tmp_path / "s.dcm")),
                               [[0.0, 0.25], [0.5, 0.75]])
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(DataFormatError, match="bad.dcm: corrupt or unreadable DICOM"):
        read_dicom_windowed(tmp_path / "bad.dcm")
    with pytest.raises(DataFormatError, match="s.dcm: DICOM image of 2 x 2 pixels exceeds"):
        read_dicom_windowed(tmp_path / "s.dcm", max_pixels=3)


def test_load_rsna_ich_png_csv_split_and_label_checks(tmp_path):
    _make_ich(tmp_path)
    (tmp_path / "png").mkdir()
    for image in ("ID_aaa", "ID_bbb", "ID_ccc", "ID_ddd"):
        Image.new("L", (4, 4), 255).save(tmp_path / "png" / f"{image}.png")
    pd.DataFrame({"image": ["ID_aaa", "ID_ccc", "ID_bbb", "ID_ddd"],
                  "client": ["a", "a", "b", "b"], "split": ["train", "test", "train", "test"]}
                 ).to_csv(tmp_path / "split.csv", index=False)
    fed = load_rsna_ich(dataset_dir=tmp_path, split_file=tmp_path / "split.csv", image_size=2)
    assert fed.info["image_format"] == "png"
    assert fed.train[1].labels.tolist() == [4] and fed.test[0].labels.tolist() == [3]
    assert torch.equal(fed.train[0][0][0], torch.ones(1, 2, 2))

    bad = json.loads((tmp_path / "split.json").read_text())
    bad["train"]["0"]["label"] = [1, 4]
    (tmp_path / "mislabelled.json").write_text(json.dumps(bad))
    with pytest.raises(DataFormatError, match="gives ID_aaa label 1, .*stage_2_train.csv gives 0"):
        load_rsna_ich(dataset_dir=tmp_path, split_file=tmp_path / "mislabelled.json")
    trusted = load_rsna_ich(dataset_dir=tmp_path, split_file=tmp_path / "mislabelled.json",
                            label_source="split")
    assert trusted.train[0].labels.tolist() == [1, 4]
    bad["train"]["1"]["image"] = ["ID_two"]
    (tmp_path / "multi.json").write_text(json.dumps(bad))
    with pytest.raises(DataFormatError, match=r"1 slice\(s\) are not single-label.*ID_two"):
        load_rsna_ich(dataset_dir=tmp_path, split_file=tmp_path / "multi.json")
    with pytest.raises(ValueError, match="'label_source' must be one of 'csv', 'split'"):
        load_rsna_ich(dataset_dir=tmp_path, split_file=tmp_path / "split.json",
                      label_source="dicom")
    (tmp_path / "png" / "ID_ddd.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"RSNA-ICH image file\(s\) not found: .*ID_ddd"):
        load_rsna_ich(dataset_dir=tmp_path, split_file=tmp_path / "split.json")


def test_read_ich_labels_errors(tmp_path):
    pd.DataFrame({"ID": ["ID_a_epidural"], "Lbl": [1]}).to_csv(tmp_path / "cols.csv", index=False)
    with pytest.raises(DataFormatError, match=r"cols.csv: missing column\(s\) 'Label'"):
        read_ich_labels(tmp_path / "cols.csv")
    pd.DataFrame({"ID": ["ID_a_epidural", "ID_a_bleed"], "Label": [1, 0]}).to_csv(
        tmp_path / "sub.csv", index=False)
    with pytest.raises(DataFormatError, match=r"sub.csv: unknown subtype\(s\) \['bleed'\]"):
        read_ich_labels(tmp_path / "sub.csv")
    rows = [[f"ID_a_{s}", 0] for s in SUBTYPES] + [["ID_a_epidural", 1]]
    pd.DataFrame(rows, columns=["ID", "Label"]).to_csv(tmp_path / "clash.csv", index=False)
    with pytest.raises(DataFormatError, match="ID_a_epidural has conflicting labels"):
        read_ich_labels(tmp_path / "clash.csv")


def test_loaders_find_their_files_under_the_data_root(tmp_path, monkeypatch):
    _make_isic(tmp_path / "isic2019")
    (tmp_path / "rsna_ich").mkdir()
    _make_ich(tmp_path / "rsna_ich")
    ich = tmp_path / "rsna_ich"
    (ich / "split.json").rename(ich / "ich_split_10clients.json")
    assert load_isic2019(tmp_path, image_size=4).client_names == ("BCN", "HAM_vidir_molemax")
    monkeypatch.setenv("FEDLIB_DATA_DIR", str(tmp_path))
    assert len(load_isic2019(image_size=4).train[1]) == 2
    assert load_rsna_ich().train[1].labels.tolist() == [3]  # default: the 10-client split file


# ----------------------------------------------------------------------------- split files


class _Evil:
    """Pickles to a call of os.system: unpickling it with pickle.load would run a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _authors_style_split() -> dict:
    return {
        "train": {0: {"image": np.array(["ID_a", "ID_b"]), "label": np.array([0, 4])},
                  1: {"image": np.array(["ID_c"], dtype=object), "label": np.array([3])}},
        "test": {0: {"image": np.array(["ID_d"]), "label": np.array([2])},
                 1: {"image": np.array([], dtype="<U4"), "label": np.array([], dtype=np.int64)}},
    }


def test_convert_pickled_split_reads_the_authors_npy_format(tmp_path):
    np.save(tmp_path / "ich_datasplit_2cl.npy", _authors_style_split(), allow_pickle=True)
    out = convert_pickled_split(tmp_path / "ich_datasplit_2cl.npy", tmp_path / "split.json")
    plain = json.loads(out.read_text())
    assert plain["train"]["0"] == {"image": ["ID_a", "ID_b"], "label": [0, 4]}
    assert plain["test"]["1"] == {"image": [], "label": []}
    split = read_client_split(out)
    assert split.clients == ("0", "1") and split.labels["train"]["1"] == [3]
    with open(tmp_path / "plain.pkl", "wb") as stream:
        pickle.dump(_authors_style_split(), stream, protocol=2)
    assert load_pickled_split(tmp_path / "plain.pkl")["train"][1]["label"].tolist() == [3]


def test_pickled_split_with_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pkl", "wb") as stream:
        pickle.dump({"train": _Evil(marker)}, stream)
    with pytest.raises(UnsafePickleError, match=r"evil.pkl: refused to unpickle global "
                                                r"(posix|os|nt)\.system"):
        convert_pickled_split(tmp_path / "evil.pkl", tmp_path / "out.json")
    payload = np.empty((), dtype=object)
    payload[()] = {"train": {0: {"image": [_Evil(marker)]}}}
    np.save(tmp_path / "evil.npy", payload, allow_pickle=True)
    with pytest.raises(UnsafePickleError, match="evil.npy: refused to unpickle global"):
        convert_pickled_split(tmp_path / "evil.npy", tmp_path / "out.json")
    assert not marker.exists()
    assert not (tmp_path / "out.json").exists()


def test_read_client_split_refuses_pickles_and_bad_files(tmp_path):
    np.save(tmp_path / "split.npy", _authors_style_split(), allow_pickle=True)
    with pytest.raises(DataFormatError, match="split.npy: pickled split files are not read "
                                              "directly; convert"):
        read_client_split(tmp_path / "split.npy")
    (tmp_path / "keys.json").write_text(json.dumps({"train": {}, "valid": {}}))
    with pytest.raises(DataFormatError, match="keys.json: a split must have exactly the keys"):
        read_client_split(tmp_path / "keys.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataFormatError, match="broken.json: not valid JSON"):
        read_client_split(tmp_path / "broken.json")
    pd.DataFrame({"image": ["a"], "client": ["0"], "split": ["val"]}).to_csv(
        tmp_path / "s.csv", index=False)
    with pytest.raises(DataFormatError, match="s.csv: column 'split' must hold 'train' or 'test'"):
        read_client_split(tmp_path / "s.csv")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(DataFormatError, match="junk.npy"):
        load_pickled_split(tmp_path / "junk.npy")


# ----------------------------------------------------------------------------- registry and CLI


def _ham_root(tmp_path: Path) -> Path:
    (tmp_path / "ham10000").mkdir()
    _make_ham(tmp_path / "ham10000")
    return tmp_path


def _busi_root(tmp_path: Path, per_class: int = 6) -> Path:
    folder = tmp_path / "busi" / "Dataset_BUSI_with_GT"
    for name in ("benign", "malignant", "normal"):
        (folder / name).mkdir(parents=True)
        for n in range(1, per_class + 1):
            Image.new("L", (12, 12), 20 * n).save(folder / name / f"{name} ({n}).png")
            _save_mask(folder / name / f"{name} ({n})_mask.png", (0, 4, 0, 4), size=(12, 12))
    return tmp_path


def _medmnist_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 4), ("test", 14)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 7).reshape(n, 1).astype(np.uint8)
    (tmp_path / "medmnist").mkdir()
    np.savez(tmp_path / "medmnist" / "dermamnist.npz", **arrays)
    return tmp_path


def test_registry_loads_ham10000_busi_and_medmnist(tmp_path):
    from fedlib.data import load_dataset

    ham = load_dataset("ham10000", root=_ham_root(tmp_path), image_size=8)
    assert ham.client_names == ("rosendahl", "vidir_modern", "vienna_dias", "vidir_molemax")
    busi = load_dataset("busi", root=_busi_root(tmp_path), image_size=8)
    assert busi.num_clients == 1 and busi.class_names == ("benign", "malignant")
    derma = load_dataset("medmnist:dermamnist", root=_medmnist_root(tmp_path))
    assert derma.num_classes == 7 and len(derma.train[0]) == 40 and len(derma.test[0]) == 14
    with pytest.raises(ValueError, match="name a MedMNIST dataset as medmnist:<name>"):
        load_dataset("medmnist", root=tmp_path)


@pytest.mark.parametrize("name", ["ham10000", "busi", "medmnist:dermamnist"])
def test_real_datasets_repartition_lazily_by_labels(tmp_path, name):
    from fedlib.data import load_dataset

    _ham_root(tmp_path), _busi_root(tmp_path), _medmnist_root(tmp_path)
    options = {} if name.startswith("medmnist") else {"image_size": 8}
    natural = load_dataset(name, root=tmp_path, **options)
    split = load_dataset(name, root=tmp_path, partition="dirichlet", num_clients=2, alpha=1.0,
                         min_size=2, **options)
    pooled = sum(len(natural.train[k]) + len(natural.test[k]) for k in natural.client_ids())
    assert sum(len(split.train[k]) + len(split.test[k]) for k in range(2)) == pooled
    again = load_dataset(name, root=tmp_path, partition="dirichlet", num_clients=2, alpha=1.0,
                         min_size=2, **options)
    assert again.fingerprint() == split.fingerprint()
    if not name.startswith("medmnist"):  # lazy files stay lazy: paths, no decoded pixels
        assert isinstance(split.train[0], ImageFileDataset)


def test_cli_runs_on_prepared_ham10000_busi_and_medmnist(tmp_path):
    from fedlib.cli import main

    _ham_root(tmp_path), _busi_root(tmp_path), _medmnist_root(tmp_path)
    common = ["--method", "fedavg", "--rounds", "1", "--root", str(tmp_path), "--width", "2",
              "--no-progress"]
    assert main(["run", "--dataset", "ham10000", "--data-option", "image_size=8", *common,
                 "--out", str(tmp_path / "runs" / "ham")]) == 0
    assert main(["run", "--dataset", "busi", "--partition", "dirichlet", "--clients", "2",
                 "--data-option", "min_size=2", "--data-option", "image_size=8", *common,
                 "--out", str(tmp_path / "runs" / "busi")]) == 0
    assert main(["run", "--dataset", "medmnist:dermamnist", "--partition", "dirichlet",
                 "--clients", "3", "--data-option", "min_size=2", *common,
                 "--out", str(tmp_path / "runs" / "derma")]) == 0
    for run in ("ham", "busi", "derma"):
        assert (tmp_path / "runs" / run / "seed0" / "summary.json").is_file()


def test_a_corrupt_image_is_one_line_naming_it_and_check_data_lists_every_one(tmp_path, capsys):
    from fedlib.cli import main

    root = _ham_root(tmp_path)
    bad = sorted((root / "ham10000").glob("HAM10000_images_part_*/*.jpg"))[-2:]
    for path in bad:
        path.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(SystemExit, match=r"^fedlib run: .*client \d failed in round 1: .*ISIC_"
                                         r".*corrupt or unreadable image.*Run `python -m fedlib "
                                         r"check-data ham10000`") as info:
        main(["run", "--dataset", "ham10000", "--method", "fedavg", "--rounds", "1",
              "--root", str(root), "--data-option", "image_size=8", "--width", "2",
              "--no-progress", "--out", str(tmp_path / "run")])
    assert "\n" not in str(info.value)
    capsys.readouterr()
    with pytest.raises(SystemExit, match=r"fedlib check-data: ham10000: 2 of 20 file\(s\) "
                                         r"unreadable or inconsistent"):
        main(["check-data", "ham10000", "--root", str(root), "--no-progress"])
    listed = capsys.readouterr().out
    for path in bad:
        assert f"{path}: corrupt or unreadable image" in listed


def test_check_data_passes_a_clean_dataset(tmp_path, capsys):
    from fedlib.cli import main

    root = _busi_root(tmp_path, per_class=5)
    assert main(["check-data", "busi", "--root", str(root), "--no-progress"]) == 0
    assert "busi: 10 file(s) decoded, all readable." in capsys.readouterr().out


def test_busi_empty_class_folder_is_an_error(tmp_path):
    folder = _make_busi(tmp_path)
    for file in (folder / "malignant").iterdir():
        file.unlink()
    with pytest.raises(DataFormatError, match="malignant: the class folder 'malignant' holds no "
                                              r"image \(it is empty\)"):
        busi_dataset(tmp_path)


def test_isic_header_only_split_is_an_error(tmp_path):
    _make_isic(tmp_path)
    header = (tmp_path / "train_test_split").read_text().splitlines()[0]
    (tmp_path / "train_test_split").write_text(header + "\n")
    with pytest.raises(DataFormatError, match=r"train_test_split: the split file lists no image "
                                              r"\(a header only\)"):
        load_isic2019(dataset_dir=tmp_path)
    from fedlib.cli import main

    with pytest.raises(SystemExit, match="fedlib run: .*lists no image"):
        main(["run", "--dataset", "isic2019", "--method", "fedavg", "--root", str(tmp_path.parent),
              "--out", str(tmp_path / "run"), "--no-progress",
              "--data-option", f"dataset_dir={tmp_path}"])


def test_layout_hint_images_one_folder_too_deep(tmp_path):
    _make_isic(tmp_path)
    images = tmp_path / "ISIC_2019_Training_Input"
    nested = images / "ISIC_2019_Training_Input"
    nested.mkdir()
    for file in images.glob("*.jpg"):
        file.rename(nested / file.name)
    with pytest.raises(FileNotFoundError, match=r"Found it one folder deeper, at .*"
                                                r"ISIC_2019_Training_Input/ISIC_2019_Training_"
                                                r"Input/ISIC_0000001.jpg: move the contents"):
        load_isic2019(dataset_dir=tmp_path)
    _make_busi(tmp_path / "b")
    busi = tmp_path / "b" / "busi" / "Dataset_BUSI_with_GT"
    busi.rename(tmp_path / "b" / "inner")
    busi.mkdir()
    (tmp_path / "b" / "inner").rename(busi / "Dataset_BUSI_with_GT")
    with pytest.raises(FileNotFoundError, match="Found it one folder deeper"):
        busi_dataset(tmp_path / "b")


def test_layout_hint_lowercase_ham_folders(tmp_path):
    _make_ham(tmp_path)
    for name in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        (tmp_path / name).rename(tmp_path / name.lower())
    with pytest.raises(FileNotFoundError, match=r"Found .*ham10000_images_part_1 instead: names "
                                                r"are case-sensitive; rename it to "
                                                r"HAM10000_images_part_1"):
        load_ham10000(dataset_dir=tmp_path)


def test_layout_hint_kaggle_rsna_folder_nested_one_level(tmp_path):
    _make_ich(tmp_path)
    kaggle = tmp_path / "rsna-intracranial-hemorrhage-detection"
    kaggle.mkdir()
    (tmp_path / "stage_2_train.csv").rename(kaggle / "stage_2_train.csv")
    (tmp_path / "stage_2_train").rename(kaggle / "stage_2_train")
    with pytest.raises(FileNotFoundError, match=r"stage_2_train.csv. Found it one folder deeper, "
                                                r"at .*rsna-intracranial-hemorrhage-detection"):
        load_rsna_ich(dataset_dir=tmp_path, split_file=tmp_path / "split.json")


def test_missing_rsna_client_split_says_how_to_get_it_offline(tmp_path):
    _make_ich(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"RSNA-ICH client split not found: .*"
                                                r"ich_split_10clients.json\. .*data_scripts/"
                                                r"rsna_ich.py.*Offline: copy"):
        load_rsna_ich(dataset_dir=tmp_path)
