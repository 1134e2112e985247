"""SynthDerm: counts, determinism, tensor contracts, masks and boxes, validation, gallery."""

from __future__ import annotations

import base64
import io
from dataclasses import fields

import numpy as np
import pytest
import torch
from PIL import Image

from fedlib.data._synthderm_render import AMOUNT_FIELDS, COLOUR_FIELDS
from fedlib.data.base import ArrayDataset
from fedlib.data.synthderm import (
    CLASS_APPEARANCE,
    PAIR_BLEND_AT_MAX,
    SITE_STYLES,
    SUPPORTED_IMAGE_SIZES,
    ClassAppearance,
    appearance_at_difficulty,
    masks_to_boxes,
    render_synthderm,
    synthderm,
    synthderm_test_counts,
)
from fedlib.data.templates import (
    ISIC2019_CENTRES,
    ISIC2019_CLASSES,
    scale_template,
    site_template,
)
from fedlib.viz import image_gallery_figure
from fedlib.viz.gallery import mask_outline, outline_loops

MEL, NV, BCC, AK, BKL, DF, VASC, SCC = range(8)


@pytest.fixture(scope="module")
def small() -> object:
    return synthderm(scale=0.02, image_size=28, seed=3)


def _bbox_of(mask: np.ndarray) -> list[int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


# ------------------------------------------------------------------------------------------
# Counts and splits
# ------------------------------------------------------------------------------------------


def test_train_counts_equal_scaled_isic_template(small):
    expected = scale_template(site_template("isic2019"), 0.02)
    np.testing.assert_array_equal(small.class_counts("train"), expected)
    # zero cells stay zero (MSK has no BCC), rare-but-present cells keep one image (DF at MSK
    # is absent, DF at HAM_vienna_dias: 4 * 0.02 rounds to 0 but is kept at 1)
    assert small.class_counts("train")[4, BCC] == 0
    assert small.class_counts("train")[5, DF] == 1


def test_test_counts_follow_each_clients_class_mix(small):
    train = small.class_counts("train")
    np.testing.assert_array_equal(small.class_counts("test"), synthderm_test_counts(train, 0.2))
    assert ((small.class_counts("test") > 0) == (train > 0)).all()


def test_test_count_rule_by_hand():
    # 8 * 0.25 = 2; 1 * 0.25 rounds to 0 but a trained class keeps one test image; 0 stays 0
    assert synthderm_test_counts(np.array([[8, 1, 0]]), 0.2).tolist() == [[2, 1, 0]]
    assert synthderm_test_counts(np.array([[8, 1, 0]]), 0.2, min_test=0).tolist() == [[2, 0, 0]]
    # 10 * 0.5 / 0.5 = 10
    assert synthderm_test_counts(np.array([[10]]), 0.5).tolist() == [[10]]


def test_full_scale_test_sizes_are_close_to_flamby():
    test = synthderm_test_counts(site_template("isic2019"), 0.2)
    flamby_test = np.array([2483, 791, 672, 452, 164, 88])
    # BCN by hand: 570 + 841 + 561 + 152 + 231 + 24 + 22 + 83 = 2484
    assert test[0].sum() == 2484
    assert np.abs(test.sum(axis=1) - flamby_test).max() <= 2


def test_federated_dataset_structure(small):
    assert small.num_clients == 6
    assert small.client_names == ISIC2019_CENTRES
    assert small.class_names == ISIC2019_CLASSES
    for k in small.client_ids():
        for split in (small.train, small.test):
            data = split[k]
            assert isinstance(data, ArrayDataset)
            n = len(data)
            assert data.images.shape == (n, 3, 28, 28)
            assert data.masks.shape == (n, 1, 28, 28)
            assert data.boxes.shape == (n, 4)
    info = small.info
    assert info["scale"] == 0.02 and info["image_size"] == 28 and info["seed"] == 3
    assert info["difficulty"] == 0.5 and info["test_frac"] == 0.2
    assert info["template"] == "isic2019"
    assert info["train_counts"] == small.class_counts("train").tolist()
    assert info["test_counts"] == small.class_counts("test").tolist()


def test_custom_counts_use_the_first_site_styles():
    counts = np.array([[2, 1, 0, 0, 0, 0, 0, 1], [0, 3, 0, 0, 0, 0, 1, 0]])
    data = synthderm(counts=counts, image_size=28)
    assert data.client_names == ("BCN", "HAM_vidir_molemax")
    np.testing.assert_array_equal(data.class_counts("train"), counts)
    assert data.info["template"] == "custom" and data.info["scale"] is None


def test_rows_are_shuffled_within_a_client(small):
    labels = small.labels(0, "train")
    assert not (np.diff(labels) >= 0).all()  # not sorted by class


# ------------------------------------------------------------------------------------------
# Determinism and independence from the batch
# ------------------------------------------------------------------------------------------


def test_same_seed_same_tensors_different_seed_different():
    labels, sites = np.arange(16) % 8, np.arange(16) % 6
    first = render_synthderm(labels, sites, image_size=28, seed=7)
    again = render_synthderm(labels, sites, image_size=28, seed=7)
    other = render_synthderm(labels, sites, image_size=28, seed=8)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[1], other[1])


def test_an_image_does_not_depend_on_the_rest_of_the_batch():
    rng = np.random.default_rng(0)
    labels, sites = rng.integers(0, 8, 40), rng.integers(0, 6, 40)
    full = render_synthderm(labels, sites, image_size=32, seed=1)
    chosen = np.array([33, 2, 17])
    alone = render_synthderm(labels[chosen], sites[chosen], image_size=32, seed=1, indices=chosen)
    for whole, part in zip(full, alone, strict=True):
        assert torch.equal(whole[chosen], part)


def test_synthderm_is_deterministic():
    a = synthderm(scale=0.01, image_size=28, seed=5)
    b = synthderm(scale=0.01, image_size=28, seed=5)
    for k in a.client_ids():
        assert torch.equal(a.train[k].images, b.train[k].images)
        assert torch.equal(a.test[k].labels, b.test[k].labels)


# ------------------------------------------------------------------------------------------
# Tensor contracts, masks and boxes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SUPPORTED_IMAGE_SIZES)
def test_shapes_dtypes_and_ranges(size):
    labels, sites = np.arange(8), np.arange(8) % 6
    images, masks, boxes = render_synthderm(labels, sites, image_size=size)
    assert images.shape == (8, 3, size, size) and images.dtype == torch.float32
    assert masks.shape == (8, 1, size, size) and masks.dtype == torch.float32
    assert boxes.shape == (8, 4) and boxes.dtype == torch.int64
    assert images.min() >= 0 and images.max() <= 1
    levels = images * 255
    assert torch.equal(levels, levels.round())  # 8-bit values k / 255
    assert set(masks.unique().tolist()) <= {0.0, 1.0}


def test_masks_are_non_empty_and_boxes_are_their_bounding_boxes():
    rng = np.random.default_rng(1)
    labels, sites = rng.integers(0, 8, 64), rng.integers(0, 6, 64)
    _, masks, boxes = render_synthderm(labels, sites, image_size=28, difficulty=1.0)
    for mask, box in zip(masks[:, 0].numpy() > 0.5, boxes.tolist(), strict=True):
        assert mask.any()
        assert box == _bbox_of(mask)


def test_masks_to_boxes_by_hand():
    masks = torch.zeros(2, 1, 4, 5)
    masks[0, 0, 1, 2] = 1
    masks[0, 0, 2, 3] = 1
    assert masks_to_boxes(masks).tolist() == [[2, 1, 4, 3], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="'masks'"):
        masks_to_boxes(masks[:, 0])


def test_lesion_sizes_follow_the_classes():
    # mean radii: MEL 0.60 > NV 0.42 > DF 0.28 of the half-width
    labels = np.repeat([MEL, NV, DF], 24)
    _, masks, _ = render_synthderm(labels, np.zeros(72, dtype=int), image_size=28, difficulty=0)
    area = masks.sum(dim=(1, 2, 3)).reshape(3, 24).mean(dim=1)
    assert area[0] > area[1] > area[2]


def test_vascular_lesions_are_redder_than_nevi():
    labels = np.repeat([VASC, NV], 24)
    images, masks, _ = render_synthderm(labels, np.full(48, 2), image_size=28, difficulty=0)
    red_minus_green = ((images[:, 0] - images[:, 1]) * masks[:, 0]).sum(dim=(1, 2))
    red_minus_green = red_minus_green / masks[:, 0].sum(dim=(1, 2))
    assert red_minus_green[:24].mean() > red_minus_green[24:].mean() + 0.1


def test_sites_shift_colour_molemax_yellow_msk_blue():
    # the same nevi at HAM_vidir_molemax (gain B 0.82) and MSK (gain B 1.08)
    labels = np.full(48, NV)
    sites = np.repeat([1, 4], 24)
    indices = np.tile(np.arange(24), 2)
    images, _, _ = render_synthderm(labels, sites, image_size=28, indices=indices)
    blue_over_red = images[:, 2].mean(dim=(1, 2)) / images[:, 0].mean(dim=(1, 2))
    assert blue_over_red[:24].mean() < blue_over_red[24:].mean()


# ------------------------------------------------------------------------------------------
# Difficulty and the design tables
# ------------------------------------------------------------------------------------------


def test_difficulty_blends_confusable_pairs_by_hand():
    base = appearance_at_difficulty(0.0)
    hard = appearance_at_difficulty(1.0)
    w = PAIR_BLEND_AT_MAX
    np.testing.assert_allclose(hard[MEL], base[MEL] + w * (base[NV] - base[MEL]))
    np.testing.assert_allclose(hard[SCC], base[SCC] + w * (base[AK] - base[SCC]))
    np.testing.assert_array_equal(hard[DF], base[DF])  # no partner
    np.testing.assert_array_equal(hard[VASC], base[VASC])
    gap_easy = np.abs(base[BCC] - base[BKL]).sum()
    gap_hard = np.abs(hard[BCC] - hard[BKL]).sum()
    assert gap_hard == pytest.approx((1 - 2 * w) * gap_easy)


def test_tables_cover_classes_sites_and_renderer_fields():
    assert tuple(CLASS_APPEARANCE) == ISIC2019_CLASSES
    assert tuple(s.name for s in SITE_STYLES) == ISIC2019_CENTRES
    names = {f.name for f in fields(ClassAppearance)}
    assert set(AMOUNT_FIELDS) <= names and set(COLOUR_FIELDS) <= names


# ------------------------------------------------------------------------------------------
# Validation messages
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"image_size": 48},
            ValueError,
            "synthderm: 'image_size' must be one of 28, 32, 64, 128, got 48.",
        ),
        ({"difficulty": 1.5}, ValueError, "'difficulty' must be a float >= 0 and <= 1, got 1.5"),
        ({"scale": 0.0}, ValueError, "'scale' must be a float > 0, got 0.0"),
        ({"test_frac": 1.0}, ValueError, "'test_frac' must be a float > 0 and < 1, got 1.0"),
        ({"seed": -1}, ValueError, "'seed' must be an int >= 0, got -1"),
        ({"seed": 1.5}, ValueError, "'seed' must be an int >= 0, got 1.5"),
        ({"seed": "0"}, TypeError, "'seed' must be an int >= 0, got '0'"),
        ({"min_test": -2}, ValueError, "'min_test' must be an int >= 0, got -2"),
    ],
)
def test_synthderm_rejects_bad_parameters(kwargs, error, message):
    with pytest.raises(error, match=message.replace(".", r"\.").replace("(", r"\(")):
        synthderm(**kwargs)


@pytest.mark.parametrize(
    ("counts", "error", "match"),
    [
        (np.ones((6, 7), dtype=int), ValueError, r"'counts' must be a table of shape \(K, 8\)"),
        (np.ones((7, 8), dtype=int), ValueError, r"1 <= K <= 6.*got shape \(7, 8\)"),
        (-np.ones((2, 8), dtype=int), ValueError, "'counts' must be >= 0, got -1"),
        (np.ones((2, 8)) * 0.5, TypeError, "'counts' must hold integers, got dtype float64"),
        (np.zeros((2, 8), dtype=int), ValueError, "at least one image, got an empty row 0"),
    ],
)
def test_synthderm_rejects_bad_counts(counts, error, match):
    with pytest.raises(error, match=match):
        synthderm(counts=counts)


def test_render_rejects_bad_arrays():
    with pytest.raises(ValueError, match=r"'labels' values must be in 0\.\.7, got 8"):
        render_synthderm(np.array([0, 8]), np.array([0, 0]))
    with pytest.raises(ValueError, match="'sites' must be a 1-D array of length 2, got shape"):
        render_synthderm(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="'sites' values must be in 0..5, got 6"):
        render_synthderm(np.array([0]), np.array([6]))
    with pytest.raises(TypeError, match="'labels' must hold integers, got dtype float64"):
        render_synthderm(np.array([0.0]), np.array([0]))
    with pytest.raises(ValueError, match="render_synthderm: 'image_size'"):
        render_synthderm(np.array([0]), np.array([0]), image_size=100)


# ------------------------------------------------------------------------------------------
# Gallery figure
# ------------------------------------------------------------------------------------------


def test_gallery_is_one_mosaic_with_a_title_per_image_and_outline_and_box_paths():
    labels, sites = np.arange(10) % 8, np.arange(10) % 6
    images, masks, boxes = render_synthderm(labels, sites, image_size=28)
    plain = image_gallery_figure(images, labels, ISIC2019_CLASSES, columns=4)
    assert [t.type for t in plain.data] == ["image", "scatter"] and not plain.layout.shapes
    assert [a.text for a in plain.layout.annotations][:3] == ["MEL", "NV", "BCC"]
    assert list(plain.data[1].hovertext) == [ISIC2019_CLASSES[c] for c in labels]
    full = image_gallery_figure(images, labels, ISIC2019_CLASSES, masks=masks, boxes=boxes)
    assert [s.type for s in full.layout.shapes] == ["path", "path"]
    band = full.layout.meta["gallery"]["band"]
    x0, y0, x1, y1 = boxes[0].tolist()  # image 0: top-left cell, below its title band
    assert full.layout.shapes[1].path.startswith(
        f"M{x0},{y0 + band}H{x1}V{y1 + band}H{x0}Z")


def test_gallery_mosaic_size_and_shrinking_of_large_images():
    images, masks, _ = render_synthderm(np.array([0, 1]), np.array([0, 1]), image_size=128)
    figure = image_gallery_figure(images, [0, 1], ISIC2019_CLASSES, masks=masks, columns=1)
    layout = figure.layout.meta["gallery"]
    assert layout["tile"] == [64, 64] and layout["rows"] == 2 and layout["columns"] == 1
    jpeg = base64.b64decode(figure.data[0].source.split(",", 1)[1])
    step = 64 + layout["band"] + layout["gap"]
    assert Image.open(io.BytesIO(jpeg)).size == (64, 2 * step)


def test_outline_loops_of_a_domino_a_diagonal_and_a_ring():
    assert outline_loops(np.array([[1, 1]])) == [[(0, 0), (2, 0), (2, 1), (0, 1)]]
    # two pixels touching at a corner: two squares
    assert outline_loops(np.array([[1, 0], [0, 1]])) == [
        [(0, 0), (1, 0), (1, 1), (0, 1)], [(1, 1), (2, 1), (2, 2), (1, 2)]]
    # a ring: the outer square clockwise, the hole the other way round
    ring = np.ones((3, 3))
    ring[1, 1] = 0
    assert outline_loops(ring) == [[(0, 0), (3, 0), (3, 3), (0, 3)],
                                   [(1, 1), (1, 2), (2, 2), (2, 1)]]
    assert outline_loops(np.zeros((3, 3))) == []


def test_mask_outline_of_a_domino():
    # two pixels side by side: 2 vertical and 4 horizontal unit edges on the pixel borders
    xs, ys = mask_outline(np.array([[1, 1]]))
    assert xs == [-0.5, -0.5, None, 1.5, 1.5, None] + [-0.5, 0.5, None, 0.5, 1.5, None] * 2
    assert ys == [-0.5, 0.5, None] * 2 + [-0.5, -0.5, None] * 2 + [0.5, 0.5, None] * 2
    assert mask_outline(np.zeros((3, 3))) == ([], [])


def test_gallery_validates_its_inputs():
    images = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="image_gallery_figure: 'columns' must be an int >= 1"):
        image_gallery_figure(images, [0, 1], ("a", "b"), columns=0)
    with pytest.raises(ValueError, match="'labels' must have 2 entries, got 1"):
        image_gallery_figure(images, [0], ("a", "b"))
    with pytest.raises(ValueError, match=r"'images' must have shape \(N, C, H, W\)"):
        image_gallery_figure(torch.zeros(2, 8, 8), [0, 1], ("a", "b"))
