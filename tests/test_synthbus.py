"""SynthBUS: breast-ultrasound-like frames, three machine styles, FedMix's site sizes."""

import numpy as np
import pytest
import torch

from fedlib.data.segmentation import tight_boxes
from fedlib.data.synthbus import (
    BUS_CLASSES,
    BUS_SITES,
    BUS_TEST_COUNTS,
    BUS_TRAIN_COUNTS,
    bus_site_style,
    render_synthbus,
    synthbus,
)

BENIGN, MALIGNANT, NORMAL = 0, 1, 2


@pytest.fixture(scope="module")
def easy_batch():
    labels = np.repeat([BENIGN, MALIGNANT], 60)
    sites = np.arange(120) % 3
    images, masks, boxes = render_synthbus(labels, sites, image_size=64, difficulty=0.0, seed=4)
    return labels, images[:, 0].numpy(), masks[:, 0].numpy() > 0.5, boxes.numpy()


def test_fedmix_site_totals():
    # fedmix.md: BUSI 516/129, BUSIS 449/113, UDIAT 130/33 (train/test)
    assert BUS_TRAIN_COUNTS.sum(axis=1).tolist() == [516, 449, 130]
    assert BUS_TEST_COUNTS.sum(axis=1).tolist() == [129, 113, 33]


@pytest.mark.parametrize("size", [32, 64, 128])
def test_render_shapes_ranges_masks_and_boxes(size):
    labels = np.array([BENIGN, MALIGNANT, NORMAL, BENIGN, MALIGNANT, NORMAL])
    images, masks, boxes = render_synthbus(labels, np.arange(6) % 3, image_size=size, seed=2)
    assert images.shape == (6, 1, size, size) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    area = masks.flatten(1).sum(1)
    assert (area[labels != NORMAL] > 0).all()
    assert (area[labels == NORMAL] == 0).all(), "normal frames have empty masks"
    assert boxes[labels == NORMAL].abs().sum() == 0
    assert np.array_equal(boxes.numpy(), tight_boxes(masks))


def test_render_is_deterministic_by_seed():
    labels, sites = np.array([0, 1, 1, 0]), np.array([0, 1, 2, 5])
    a = render_synthbus(labels, sites, seed=9)
    b = render_synthbus(labels, sites, seed=9)
    c = render_synthbus(labels, sites, seed=10)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_tumour_is_hypoechoic(easy_batch):
    _, images, masks, _ = easy_batch
    for img, mask in zip(images, masks, strict=True):
        assert img[mask].mean() < img[~mask].mean() - 0.1


def test_shape_tendencies_benign_wide_malignant_tall(easy_batch):
    labels, _, _, boxes = easy_batch
    width_over_height = (boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1])
    assert width_over_height[labels == BENIGN].mean() > 1.3
    assert width_over_height[labels == MALIGNANT].mean() < 1.15


def test_posterior_shadowing_is_a_malignant_tendency(easy_batch):
    """Below the lesion, malignant frames are darker (shadow), benign ones brighter."""
    labels, images, _, boxes = easy_batch
    ratios = []
    for img, (x0, _, x1, y1) in zip(images, boxes, strict=True):
        below = img[y1 + 2 : y1 + 12]
        ratios.append(below[:, x0:x1].mean() / below.mean())
    ratios = np.array(ratios)
    assert ratios[labels == MALIGNANT].mean() < 0.95
    assert ratios[labels == BENIGN].mean() > 1.0


def test_site_styles():
    assert bus_site_style(1) == bus_site_style(1)
    assert len({bus_site_style(k).speckle_lateral_px for k in range(3)}) == 3
    with pytest.raises(ValueError, match="'site'"):
        bus_site_style(-2)


def test_synthbus_counts_match_the_scaled_tables():
    data = synthbus(scale=0.3, image_size=32, seed=0)
    assert data.client_names == BUS_SITES and data.class_names == BUS_CLASSES
    # by hand: round(0.3 * (349, 167)) = (105, 50); round(0.3 * (22, 11)) = (7, 3)
    assert data.class_counts("train")[0].tolist() == [105, 50]
    assert data.class_counts("test")[2].tolist() == [7, 3]
    assert data.class_counts("train").sum(axis=1).tolist() == [155, 135, 39]
    sizes = data.class_counts("train").sum(axis=1)
    assert sizes.argmin() == 2, "UDIAT (the pixel-labelled client in FedMix) is the smallest"


def test_synthbus_with_normal_frames_and_test_frac():
    data = synthbus(scale=0.3, image_size=32, include_normal=True, seed=0)
    assert data.class_names == ("benign", "malignant", "normal")
    # round(133 * 0.3) = 40 normal frames at BUSI, round(40 * 129 / 645) = 8 of them test
    assert data.class_counts("train")[:, NORMAL].tolist() == [32, 0, 0]
    assert data.class_counts("test")[:, NORMAL].tolist() == [8, 0, 0]
    normal = data.train[0].labels == NORMAL
    assert data.train[0].masks[normal].sum() == 0
    resplit = synthbus(scale=0.1, image_size=32, test_frac=0.5, seed=0)
    assert np.abs(resplit.class_counts("train") - resplit.class_counts("test")).max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scale": -1.0}, ValueError, "'scale'"),
        ({"test_frac": 1.5}, ValueError, "'test_frac'"),
        ({"include_normal": "yes"}, TypeError, "'include_normal'"),
        ({"difficulty": 2.0}, ValueError, "'difficulty'"),
    ],
)
def test_synthbus_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        synthbus(**kwargs)


def test_render_rejects_bad_labels():
    with pytest.raises(ValueError, match="'labels'"):
        render_synthbus([3], [0])
