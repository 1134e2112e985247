"""SynthICH: CT-like head slices with five haemorrhage subtypes and the RSNA-ICH site mix."""

import numpy as np
import pytest
import torch

from fedlib.data._geometry import gaussian_blur, gaussian_kernels, soft_inside
from fedlib.data._render import render_in_chunks
from fedlib.data.segmentation import tight_boxes
from fedlib.data.synthich import ich_site_style, render_synthich, synthich
from fedlib.data.templates import ICH_CLASSES, scale_template, site_template

EDH, IPH, IVH, SAH, SDH = range(5)


@pytest.fixture(scope="module")
def easy_batch():
    """20 slices per class, site 0, easiest setting (large, bright haemorrhages)."""
    labels = np.repeat(np.arange(5), 20)
    images, masks, boxes = render_synthich(
        labels, np.zeros_like(labels), image_size=64, difficulty=0.0, seed=3
    )
    return labels, images[:, 0].numpy(), masks[:, 0].numpy() > 0.5, boxes.numpy()


@pytest.mark.parametrize("size", [32, 64, 128])
def test_render_shapes_ranges_and_boxes(size):
    labels = np.arange(10) % 5
    images, masks, boxes = render_synthich(labels, np.arange(10), image_size=size, seed=1)
    assert images.shape == (10, 1, size, size) and images.dtype == torch.float32
    assert masks.shape == (10, 1, size, size) and boxes.shape == (10, 4)
    assert boxes.dtype == torch.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    assert (masks.flatten(1).sum(1) > 0).all(), "every slice shows its haemorrhage"
    assert np.array_equal(boxes.numpy(), tight_boxes(masks))


def test_render_is_deterministic_by_seed():
    labels, sites = np.array([0, 1, 2, 3, 4]), np.array([0, 3, 3, 7, 9])
    a = render_synthich(labels, sites, seed=5)
    b = render_synthich(labels, sites, seed=5)
    c = render_synthich(labels, sites, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_haemorrhage_is_hyperdense(easy_batch):
    """Blood is brighter than brain tissue and darker than bone (brain window)."""
    _, images, masks, _ = easy_batch
    for img, mask in zip(images, masks, strict=True):
        tissue = img[(img > 0.2) & (img < 0.7) & ~mask]
        assert img[mask].mean() > np.median(tissue) + 0.15
        assert img[mask].mean() < img.max()


def test_haemorrhage_locations_follow_the_subtype(easy_batch):
    labels, _, masks, _ = easy_batch
    centre = 31.5
    ys, xs = np.mgrid[0:64, 0:64]
    dist = np.array([np.hypot(ys[m] - centre, xs[m] - centre).mean() for m in masks])
    # extra-axial collections (EDH, SDH) lie against the skull, IVH in the central ventricles,
    # SAH in the sulci of the cortex
    assert dist[labels == EDH].min() > 14 and dist[labels == SDH].min() > 14
    assert dist[labels == IVH].max() < 13
    assert dist[labels == SAH].mean() > 16 > dist[labels == IPH].mean()
    # SDH is a long crescent, EDH a short lens: compare the longer side of their boxes
    extent = np.array([max(b[2] - b[0], b[3] - b[1]) for b in easy_batch[3]])
    assert extent[labels == SDH].mean() > 1.5 * extent[labels == EDH].mean()


def test_site_styles_are_fixed_and_distinct():
    assert ich_site_style(4) == ich_site_style(4)
    styles = [ich_site_style(k) for k in range(10)]
    assert len({s.noise_std for s in styles}) == 10
    with pytest.raises(ValueError, match="'site'"):
        ich_site_style(-1)


def test_synthich_ich10_counts_match_the_scaled_template():
    data = synthich(split="ich10", scale=0.02, image_size=32, seed=0)
    expected = scale_template(site_template("ich10"), 0.02)
    total = data.class_counts("train") + data.class_counts("test")
    assert np.array_equal(total, expected)
    assert data.num_clients == 10 and data.class_names == ICH_CLASSES
    # client 0, SDH: round(0.02 * 5042) = 101 images -> round(0.2 * 101) = 20 test, 81 train
    assert data.class_counts("test")[0, SDH] == 20 and data.class_counts("train")[0, SDH] == 81
    # zero cells stay zero (client 0 has no EDH and no IPH)
    assert total[0, EDH] == 0 and total[0, IPH] == 0
    assert np.array_equal(np.asarray(data.info["train_counts"]), data.class_counts("train"))


def test_synthich_ich5_training_counts_match_the_scaled_template():
    data = synthich(split="ich5", scale=0.01, image_size=32, seed=0)
    assert np.array_equal(data.class_counts("train"), scale_template(site_template("ich5"), 0.01))
    assert (data.class_counts("test") > 0).all(), "near-IID: every class at every client"


def test_synthich_is_deterministic_and_clients_differ_in_style():
    a = synthich(split="ich5", scale=0.005, image_size=32, seed=2)
    b = synthich(split="ich5", scale=0.005, image_size=32, seed=2)
    assert torch.equal(a.train[3].images, b.train[3].images)
    assert torch.equal(a.test[1].masks, b.test[1].masks)
    assert not torch.equal(a.train[0].images[:5], a.train[1].images[:5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": [0, 5], "sites": [0, 0]}, "'labels'"),
        ({"labels": [0, 1], "sites": [0]}, "'sites'"),
        ({"labels": [0, 1], "sites": [0, -1]}, "'sites'"),
        ({"labels": [0], "sites": [0], "difficulty": 1.5}, "'difficulty'"),
        ({"labels": [0], "sites": [0], "image_size": 8}, "'image_size'"),
    ],
)
def test_render_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        render_synthich(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "ich7"}, "'split'"),
        ({"scale": 0.0}, "'scale'"),
        ({"test_frac": 1.0}, "'test_frac'"),
    ],
)
def test_synthich_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthich(**kwargs)


# ----------------------------------------------------------------------------- shared helpers


def test_soft_inside_by_hand():
    signed = np.array([-2.0, -0.5, 0.0, 0.25, 0.5, 3.0])
    assert soft_inside(signed).tolist() == [1.0, 1.0, 0.5, 0.25, 0.0, 0.0]


def test_gaussian_kernels_by_hand():
    k = gaussian_kernels(np.array([1.0, 0.0]))
    assert k.shape == (2, 7)  # radius ceil(3 * 1) = 3, shared by every row
    z = 1 + 2 * (np.exp(-0.5) + np.exp(-2.0) + np.exp(-4.5))
    expected = np.exp(-0.5 * np.arange(-3, 4) ** 2) / z
    np.testing.assert_allclose(k[0], expected, rtol=1e-6)
    assert k[1].tolist() == [0, 0, 0, 1, 0, 0, 0]  # sigma < 0.05 px: the identity


def test_gaussian_blur_of_a_point_is_the_kernel_outer_product():
    images = np.zeros((2, 9, 9), dtype=np.float32)
    images[:, 4, 4] = 1.0
    out = gaussian_blur(images, np.array([1.0, 0.0], dtype=np.float32))
    k = gaussian_kernels(np.array([1.0]))[0]
    np.testing.assert_allclose(out[0, 1:8, 1:8], np.outer(k, k), rtol=1e-5, atol=1e-7)
    assert np.array_equal(out[1], images[1])  # zero sigma: unchanged
    assert gaussian_blur(images, 0.0) is images  # nothing to blur: no copy


def test_render_in_chunks_places_every_chunk_and_boxes_its_masks():
    calls = []

    def render(rows):
        ids = np.arange(5)[rows]
        calls.append(ids.tolist())
        images = np.broadcast_to(ids[:, None, None], (ids.size, 2, 2)).astype(np.float32)
        masks = np.zeros((ids.size, 2, 2), dtype=np.float32)
        masks[:, 1, 0] = ids > 0  # one pixel at (y=1, x=0), none in image 0
        return images, masks

    # 2 x 2 images, 8 pixels per chunk: 2 images per chunk (min_chunk 1)
    images, masks, boxes = render_in_chunks(render, 5, 2, chunk_pixels=8, min_chunk=1)
    assert calls == [[0, 1], [2, 3], [4]]
    assert images[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4] and images.dtype == torch.float32
    assert boxes.tolist() == [[0, 0, 0, 0]] + [[0, 1, 1, 2]] * 4
    calls.clear()
    again = render_in_chunks(render, 5, 2, order=np.array([4, 0, 3, 1, 2]), chunk_pixels=8)
    assert calls == [[4, 0, 3, 1], [2]]  # min_chunk 4 by default
    assert torch.equal(again[0], images) and torch.equal(again[2], boxes)
