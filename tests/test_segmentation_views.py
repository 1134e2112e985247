"""Segmentation views: boxes from masks, per-client supervision levels, FedMix settings."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fedlib.data.base import ArrayDataset
from fedlib.data.segmentation import (
    SUPERVISION_SETTINGS,
    SegmentationDataset,
    box_masks,
    boxes_with_margin,
    default_box_margin,
    ham10000_counts,
    image_level_targets,
    segmentation_view,
    tight_boxes,
)


def square_masks():
    """Two 12x12 masks: rows 2-4 x cols 1-5 foreground, and an empty one."""
    masks = np.zeros((2, 1, 12, 12), dtype=np.float32)
    masks[0, 0, 2:5, 1:6] = 1
    return masks


# ----------------------------------------------------------------------------- boxes


def test_tight_boxes_by_hand():
    assert tight_boxes(square_masks()).tolist() == [[1, 2, 6, 5], [0, 0, 0, 0]]


def test_boxes_with_margin_contain_the_tight_box_within_the_margin():
    masks = np.zeros((200, 1, 20, 20), dtype=np.float32)
    masks[:, 0, 8:12, 7:13] = 1
    boxes = boxes_with_margin(masks, (1, 9), seed=0)
    tight = np.array([7, 8, 13, 12])
    pad = np.abs(boxes - tight)
    # margins in [1, 9] px per side, clamped to the image
    assert (boxes[:, :2] <= tight[:2] - 1).all() and (boxes[:, 2:] >= tight[2:] + 1).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 20).all()
    assert (pad[:, 0] == np.minimum(pad[:, 0], 7)).all() and pad.max() <= 9
    assert (boxes[:, 0] == 0).any(), "margins above 7 px clamp at the left border"
    assert np.array_equal(boxes, boxes_with_margin(masks, (1, 9), seed=0))
    assert not np.array_equal(boxes, boxes_with_margin(masks, (1, 9), seed=1))


def test_fixed_margin_and_empty_mask():
    boxes = boxes_with_margin(square_masks(), 2)
    assert boxes.tolist() == [[0, 0, 8, 7], [0, 0, 0, 0]]  # x0 = max(1 - 2, 0) = 0


@pytest.mark.parametrize(
    ("margin", "error"), [((3, 1), ValueError), (-1, ValueError), ("2", TypeError)]
)
def test_margin_validation(margin, error):
    with pytest.raises(error, match="'margin'"):
        boxes_with_margin(square_masks(), margin)


def test_box_masks_by_hand():
    m = box_masks(np.array([[1, 2, 3, 4]]), 5, 5)
    expected = torch.zeros(1, 1, 5, 5)
    expected[0, 0, 2:4, 1:3] = 1
    assert torch.equal(m, expected)


def test_image_level_targets():
    t = image_level_targets(torch.from_numpy(square_masks()))
    assert t.tolist() == [[1.0], [0.0]]


def test_default_box_margin_scales_fedmix_margin():
    assert default_box_margin(224) == (1, 9)
    assert default_box_margin(64) == (1, 3)
    assert default_box_margin(16) == (1, 1)


# ----------------------------------------------------------------------------- dataset


def small_source():
    masks = torch.from_numpy(square_masks())
    masks[1, 0, 6:9, 6:10] = 1
    return ArrayDataset(torch.rand(2, 1, 12, 12), torch.tensor([0, 1]), masks=masks)


def test_levels_give_the_right_targets_and_hide_the_mask():
    src = small_source()
    pixel = SegmentationDataset(src, "pixel")[0]
    assert torch.equal(pixel["target"], src.masks[0]) and torch.equal(pixel["mask"], src.masks[0])
    box_ds = SegmentationDataset(src, "box", box_margin=1)
    box = box_ds[0]
    assert "mask" not in box
    assert box["box"].tolist() == [0, 1, 7, 6]
    assert torch.equal(box["target"], box_masks(box["box"][None], 12, 12)[0])
    assert (box["target"] >= src.masks[0]).all(), "the box covers the lesion"
    image = SegmentationDataset(src, "image")[1]
    assert image["target"].tolist() == [1.0] and int(image["label"]) == 1 and "mask" not in image
    none = SegmentationDataset(src, "none")[0]
    assert none["target"].shape == (0,) and "mask" not in none
    shown = SegmentationDataset(src, "none", reveal_mask=True)[0]
    assert torch.equal(shown["mask"], src.masks[0])


def test_dataset_attributes_and_collate():
    ds = SegmentationDataset(small_source(), "box")
    assert ds.supervision == "box" and ds.labels.tolist() == [0, 1]
    assert ds.with_supervision("pixel").supervision == "pixel"
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 1, 12, 12) and batch["box"].shape == (2, 4)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((np.zeros(3), "pixel"), {}, TypeError, "'source'"),
        ((None, "points"), {}, ValueError, "'supervision'"),
        ((None, "box"), {"boxes": np.zeros((3, 4))}, ValueError, "'boxes'"),
        ((None, "pixel"), {"reveal_mask": 1}, TypeError, "'reveal_mask'"),
    ],
)
def test_dataset_rejects_bad_input(args, kwargs, error, match):
    args = tuple(small_source() if a is None else a for a in args)
    with pytest.raises(error, match=match):
        SegmentationDataset(*args, **kwargs)


def test_dataset_needs_masks():
    with pytest.raises(ValueError, match="masks"):
        SegmentationDataset(ArrayDataset(torch.rand(2, 1, 4, 4), torch.tensor([0, 1])), "pixel")


# ----------------------------------------------------------------------------- views


@pytest.fixture(scope="module")
def bus_fedmix():
    return segmentation_view("synthbus", "fedmix", scale=0.1, image_size=32, seed=0)


def test_synthbus_fedmix_setting(bus_fedmix):
    data = bus_fedmix
    assert data.info["supervision"] == ("image", "box", "pixel")
    assert [data.train[k].supervision for k in range(3)] == ["image", "box", "pixel"]
    assert data.client_names == ("BUSI", "BUSIS", "UDIAT")
    sizes = [len(data.train[k]) for k in range(3)]
    # scale_template rounds half to even: (349, 167) -> (35, 17); (244, 205) -> (24, 20); (88, 42)
    # -> (9, 4)
    assert sizes == [52, 44, 13] and np.argmin(sizes) == 2
    # weak training splits hide the mask; every test split reveals it
    assert "mask" not in data.train[0][0] and "mask" not in data.train[1][0]
    assert all("mask" in data.test[k][0] for k in range(3))
    box = data.train[1]
    assert (box.targets >= box.true_masks).all(), "each box covers its lesion"


def test_views_share_pixels_across_settings(bus_fedmix):
    full = segmentation_view("synthbus", "full", scale=0.1, image_size=32, seed=0)
    assert full.info["supervision"] == ("pixel",) * 3
    for k in range(3):
        assert torch.equal(full.train[k].images, bus_fedmix.train[k].images)
        assert torch.equal(full.test[k].true_masks, bus_fedmix.test[k].true_masks)


def test_normal_frames_go_to_unlabeled_clients_only():
    data = segmentation_view("synthbus", ("none", "box", "none"), scale=0.1, image_size=32)
    assert data.class_names == ("benign", "malignant", "normal")
    counts = np.asarray(data.info["train_counts"])
    # round(133 * 0.1) = 13 normal frames split 7 / 6 over clients 0 and 2
    assert counts[:, 2].tolist() == [7, 0, 6]
    assert np.asarray(data.info["test_counts"])[:, 2].sum() == 0
    client0 = data.train[0]
    assert client0.true_masks[client0.labels == 2].sum() == 0
    without = segmentation_view(
        "synthbus", ("none", "box", "none"), scale=0.1, image_size=32, normal_to_none=False
    )
    assert without.class_names == ("benign", "malignant")


def test_synthderm_view_follows_ham10000_sources():
    data = segmentation_view("synthderm", "fedmix", scale=0.02, image_size=32, seed=1)
    assert data.info["supervision"] == ("box", "box", "pixel", "box")
    assert data.client_names == (
        "HAM_rosendahl", "HAM_vidir_modern", "HAM_vienna_dias", "HAM_vidir_molemax",
    )  # fmt: skip
    train, test = ham10000_counts(0.02)
    assert np.array_equal(np.asarray(data.info["train_counts"]), train)
    assert np.array_equal(np.asarray(data.info["test_counts"]), test)
    # source sizes 2259, 3363, 439, 3954 scaled: the pixel client (Vienna-Dias) is the smallest
    assert np.argmin((train + test).sum(axis=1)) == 2
    assert abs(int((train + test)[1].sum()) - round(0.02 * 3363)) <= 3
    assert data.train[0].images.shape[1:] == (1, 32, 32), "grayscale, as FedMix reads images"
    colour = segmentation_view("synthderm", "full", scale=0.02, image_size=32, grayscale=False)
    assert colour.train[0].images.shape[1] == 3


def test_ham10000_sources_have_one_definition_shared_with_the_real_loader():
    from fedlib.data import real, recipes, segmentation

    assert recipes.HAM10000_SOURCES == ("rosendahl", "vidir_modern", "vienna_dias", "vidir_molemax")
    assert real.HAM10000_SOURCES == recipes.HAM10000_SOURCES  # the metadata's source names
    assert segmentation.HAM10000_SOURCES is recipes.HAM10000_SOURCES
    assert sum(recipes.HAM10000_SOURCE_SIZES) == 10015  # HAM10000's images
    # ISIC2019_CENTRES: BCN, HAM_vidir_molemax, HAM_vidir_modern, HAM_rosendahl, MSK, ...dias
    assert recipes.ham10000_centres().tolist() == [3, 2, 5, 1]
    assert recipes.ham10000_client_names()[2] == "HAM_vienna_dias"


def test_ham10000_counts_by_hand():
    # Vienna-Dias (centre 5, row [58, 276, 5, 0, 6, 4, 2, 0], 351 images) as 439 images at
    # scale 0.1: round(0.1 * 439 * row / 351) = [7, 35, 1, 0, 1, 1, 0 -> 1 (present), 0]
    train, test = ham10000_counts(0.1)
    assert (train + test)[2].tolist() == [7, 35, 1, 0, 1, 1, 1, 0]
    # 80/20 per cell: test = min(round_half_up(0.2 n), n - 1)
    assert test[2].tolist() == [1, 7, 0, 0, 0, 0, 0, 0]


def test_bus_normal_frames_are_split_over_the_unlabeled_clients_by_hand():
    from fedlib.data.recipes import bus_normal_clients

    # round_half_up(133 * 0.1) = 13 frames: 7 to client 0, 6 to client 2
    assert bus_normal_clients([0, 2], 0.1).tolist() == [0] * 7 + [2] * 6
    assert bus_normal_clients([1, 2], 0.001).tolist() == [1]  # at least one frame
    assert bus_normal_clients([], 0.3).tolist() == []


def test_named_settings_have_one_level_per_client():
    assert SUPERVISION_SETTINGS["synthderm"]["fedmix"] == ("box", "box", "pixel", "box")
    assert SUPERVISION_SETTINGS["synthbus"]["fedmix"] == ("image", "box", "pixel")


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("synthct",), {}, ValueError, "'dataset_name'"),
        (("synthbus", "weak"), {}, ValueError, "'supervision'"),
        (("synthbus", ("pixel", "box")), {}, ValueError, "'supervision'"),
        (("synthbus", ("pixel", "box", "scribble")), {}, ValueError, "'supervision'"),
        (("synthbus",), {"scale": 0}, ValueError, "'scale'"),
        (("synthbus",), {"box_margin": (2, 1)}, ValueError, "'margin'"),
        (("synthbus",), {"grayscale": None}, TypeError, "'grayscale'"),
    ],
)
def test_view_rejects_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        segmentation_view(*args, **kwargs)
