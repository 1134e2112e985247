"""FedMix and its baselines: the maths on hand-made masks, then the federated methods.

Numbers in comments are worked by hand; spec references are to ``fedmix.md``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from fedlib.losses import soft_dice_loss
from fedlib.metrics import dice_score
from fedlib.segmentation_ops import (
    agreement_dice,
    binary_prediction,
    confident_pixel_targets,
    fedmix_weights,
    fedst_weights,
    gamma_adjust,
    masked_bce,
    pseudo_label_pass,
    refine_pseudo_labels,
    select_pseudo_labels,
)


def square(size: int, y0: int, x0: int, side: int, channels: int = 1) -> torch.Tensor:
    """One mask (1, C, size, size) with a filled ``side`` x ``side`` square."""
    m = torch.zeros(1, channels, size, size)
    m[:, :, y0 : y0 + side, x0 : x0 + side] = 1.0
    return m


class FixedLogits(nn.Module):
    """A stand-in network that returns the same logits for any input batch."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: x.shape[0]]


def logits_of(mask: torch.Tensor) -> torch.Tensor:
    return mask * 8.0 - 4.0


# --------------------------------------------------------------------------- Dice


def test_soft_dice_loss_of_a_mask_with_itself_is_zero():
    y = square(8, 1, 1, 3)
    assert soft_dice_loss(y, y).item() == 0.0
    empty = torch.zeros(2, 1, 8, 8)
    assert soft_dice_loss(empty, empty).item() == 0.0  # Dice 1 by the eps convention


def test_soft_dice_loss_empty_prediction_hundred_pixels():
    y = square(16, 0, 0, 10).double()  # 100 foreground pixels
    expected = 1 - 1e-4 / (100 + 1e-4)
    assert soft_dice_loss(torch.zeros_like(y), y).item() == pytest.approx(expected, abs=1e-9)


def test_dice_on_hand_made_masks():
    # a: 4x4 square (16 px), b: the same square shifted by 2 columns -> overlap 2x4 = 8 px
    a, b = square(8, 0, 0, 4), square(8, 0, 2, 4)
    expected = (2 * 8 + 1e-4) / (16 + 16 + 1e-4)
    assert agreement_dice(a, b).item() == pytest.approx(expected, abs=1e-7)  # float32
    assert dice_score(logits_of(a), b) == pytest.approx(expected, abs=1e-9)
    empty = torch.zeros(1, 1, 8, 8)
    assert agreement_dice(empty, empty).item() == 1.0
    assert dice_score(logits_of(empty), empty) == 1.0
    # one empty, one with 16 px: eps / (16 + eps)
    assert agreement_dice(empty, a).item() == pytest.approx(1e-4 / (16 + 1e-4), abs=1e-9)


def test_agreement_dice_sums_over_channels():
    # channel 0: the same 4 px in both; channel 1: 4 px in a, 8 other px in b.
    # Whole tensor: (2*4 + eps) / (8 + 12 + eps) = 0.4 (a per-channel mean would give 0.5).
    a = torch.zeros(1, 2, 4, 4)
    b = torch.zeros(1, 2, 4, 4)
    a[0, 0, :2, :2] = b[0, 0, :2, :2] = 1
    a[0, 1, :2, :2] = 1
    b[0, 1, 2:, :] = 1
    assert agreement_dice(a, b).item() == pytest.approx((8 + 1e-4) / (20 + 1e-4), abs=1e-7)


def test_monai_dice_loss_matches_soft_dice_for_one_channel_not_for_several():
    from monai.losses import DiceLoss

    gen = torch.Generator().manual_seed(0)
    p = torch.rand(3, 1, 8, 8, generator=gen)
    y = (torch.rand(3, 1, 8, 8, generator=gen) > 0.6).float()
    y[2] = 0.0
    monai = DiceLoss(smooth_nr=1e-4, smooth_dr=1e-4)
    assert monai(p, y).item() == pytest.approx(soft_dice_loss(p, y).item(), abs=1e-6)
    empty = torch.zeros(2, 1, 8, 8)
    assert monai(empty, empty).item() == 0.0 == soft_dice_loss(empty, empty).item()
    # Several channels: MONAI averages per-channel Dice, FedMix sums over the whole tensor.
    p2, y2 = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    p2[0, 0, :2, :2] = y2[0, 0, :2, :2] = 1.0  # channel 0 perfect, channel 1 empty vs 4 px
    y2[0, 1, 2:, 2:] = 1.0
    fedmix = 1 - (8 + 1e-4) / (12 + 1e-4)
    per_channel = 1 - (1 + 1e-4 / (4 + 1e-4)) / 2
    assert soft_dice_loss(p2, y2).item() == pytest.approx(fedmix, abs=1e-6)
    assert monai(p2, y2).item() == pytest.approx(per_channel, abs=1e-6)


def test_monai_dice_metric_convention_for_empty_masks():
    from monai.metrics import DiceMetric

    a, empty = square(8, 0, 0, 4), torch.zeros(1, 1, 8, 8)
    pred = torch.cat([a, empty, empty, square(8, 0, 2, 4)])
    true = torch.cat([a, empty, a, a])
    ours = dice_score(pred, true, from_logits=False, reduction="none")
    # MONAI's default ignores an empty ground truth (NaN); with ignore_empty=False an
    # empty/empty pair scores 1 as ours does, and the rest agrees up to eps / (|a| + |b|).
    default = DiceMetric(reduction="none")(pred.bool(), true.bool()).flatten()
    assert torch.isnan(default[1])
    theirs = DiceMetric(reduction="none", ignore_empty=False)(pred.bool(), true.bool()).flatten()
    assert theirs[1].item() == ours[1] == 1.0
    assert np.allclose(theirs.numpy(), ours, atol=1e-5)


# --------------------------------------------------------------------------- refinement


def test_binary_prediction_thresholds_logits_at_zero():
    z = torch.tensor([[[[-1.0, 0.0, 0.5]]]])
    assert binary_prediction(z).tolist() == [[[[0.0, 0.0, 1.0]]]]


def test_box_refinement_zeroes_outside_and_keeps_inside():
    gen = torch.Generator().manual_seed(1)
    masks = (torch.rand(2, 1, 8, 8, generator=gen) > 0.3).float()
    box = torch.zeros(2, 1, 8, 8)
    box[0, :, 2:6, 1:5] = 1
    box[1, :, 0:3, 3:8] = 1
    refined = refine_pseudo_labels(masks, "box", box)
    assert torch.equal(refined[box == 0], torch.zeros(int((box == 0).sum())))
    assert torch.equal(refined[box == 1], masks[box == 1])


def test_box_refinement_applies_to_every_channel():
    masks = torch.ones(1, 2, 4, 4)
    box = torch.zeros(1, 1, 4, 4)
    box[..., 1:3, 1:3] = 1
    assert refine_pseudo_labels(masks, "box", box).sum().item() == 8.0


def test_image_refinement_wipes_exactly_the_absent_channels():
    masks = torch.ones(2, 3, 4, 4)
    present = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    refined = refine_pseudo_labels(masks, "image", present)
    assert refined.flatten(2).amax(2).tolist() == present.tolist()
    assert torch.equal(refined[0, 0], masks[0, 0])


def test_single_class_image_label_and_none_refine_nothing():
    masks = square(8, 2, 2, 3)
    assert torch.equal(refine_pseudo_labels(masks, "image", torch.ones(1, 1)), masks)
    assert torch.equal(refine_pseudo_labels(masks, "none"), masks)


def test_refinement_validation():
    masks = torch.ones(1, 1, 4, 4)
    with pytest.raises(ValueError, match="'supervision' must be one of 'box', 'image', 'none'"):
        refine_pseudo_labels(masks, "pixel")
    with pytest.raises(ValueError, match=re.escape("must be box masks of shape (1, 1, 4, 4)")):
        refine_pseudo_labels(masks, "box", torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match=re.escape("presence vectors of shape (1, 1)")):
        refine_pseudo_labels(masks, "image", torch.ones(1, 2))
    with pytest.raises(TypeError, match="'masks' must be a torch.Tensor"):
        refine_pseudo_labels(np.ones((1, 1, 4, 4)), "none")


# --------------------------------------------------------------------------- selection


def test_selection_keeps_agreeing_and_drops_disagreeing_images():
    same = square(8, 1, 1, 4)
    y1 = torch.cat([same, square(8, 0, 0, 3), torch.zeros(1, 1, 8, 8), square(8, 0, 0, 4)])
    y2 = torch.cat([same, square(8, 5, 5, 3), torch.zeros(1, 1, 8, 8), square(8, 0, 0, 4)])
    y2[3, 0, 0, 0] = 0  # 15 of 16 px: Dice = 30 / 31 = 0.968 >= 0.9
    keep = select_pseudo_labels(y1, y2, tau=0.9)
    assert keep.tolist() == [True, False, True, True]
    assert select_pseudo_labels(y1, y2, tau=0.97).tolist() == [True, False, True, False]
    assert select_pseudo_labels(y1, y2, tau=0.0).all()  # tau = 0: no selection


def test_selection_rejects_a_mask_that_fills_less_than_half_its_box():
    box = square(8, 0, 0, 4)  # 16 px
    big = square(8, 0, 0, 3)  # 9 px inside: Dice = 18 / 25 = 0.72
    small = square(8, 0, 0, 2)  # 4 px: Dice = 8 / 20 = 0.4
    y = torch.cat([big, small])
    boxes = torch.cat([box, box])
    assert select_pseudo_labels(y, y, box=boxes).tolist() == [True, False]
    assert select_pseudo_labels(y, y, box=boxes, box_coverage_min=0.3).tolist() == [True, True]


def test_two_empty_pseudo_labels_pass_unless_rejected():
    empty = torch.zeros(2, 1, 4, 4)
    assert select_pseudo_labels(empty, empty).all()
    assert not select_pseudo_labels(empty, empty, reject_empty=True).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": 1.5}, "select_pseudo_labels: 'tau' must be a float >= 0 and <= 1, got 1.5."),
        (
            {"box_coverage_min": -0.1},
            "select_pseudo_labels: 'box_coverage_min' must be a float >= 0 and <= 1, got -0.1.",
        ),
        (
            {"reject_empty": 1},
            "select_pseudo_labels: 'reject_empty' must be one of True, False, got 1.",
        ),
    ],
)
def test_selection_validation(kwargs, message):
    y = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        select_pseudo_labels(y, y, **kwargs)


def test_pseudo_label_pass_refines_then_selects():
    # net1 and net2 both predict a 6x6 square; the box covers its top-left 4x4 part; a second
    # image where the nets disagree entirely.
    m = torch.cat([square(8, 0, 0, 6), square(8, 0, 0, 4)])
    m2 = torch.cat([square(8, 0, 0, 6), square(8, 4, 4, 4)])
    box = torch.cat([square(8, 0, 0, 4), square(8, 0, 0, 8)])
    out = pseudo_label_pass(
        FixedLogits(logits_of(m)), FixedLogits(logits_of(m2)), torch.zeros(2, 1, 8, 8), "box", box
    )
    assert out.keep.tolist() == [True, False]
    assert out.num_selected == 1
    assert torch.equal(out.y1[0], square(8, 0, 0, 4)[0])  # refined to the box
    assert torch.equal(out.y2[1], square(8, 4, 4, 4)[0])


def test_agreement_before_refinement_as_in_the_first_version():
    # Outside the box the nets disagree, inside they agree: after refinement they agree.
    a = square(8, 0, 0, 4)
    b = a.clone()
    b[..., 6:, 6:] = 1  # extra 4 px outside the box
    box = square(8, 0, 0, 5)
    nets = FixedLogits(logits_of(a)), FixedLogits(logits_of(b))
    x = torch.zeros(1, 1, 8, 8)
    after = pseudo_label_pass(*nets, x, "box", box, tau=0.9)
    before = pseudo_label_pass(*nets, x, "box", box, tau=0.9, agree_after_refine=False)
    assert after.keep.tolist() == [True]  # Dice 1 after refinement
    assert before.keep.tolist() == [False]  # Dice 32 / 36 = 0.889 < 0.9
    unrefined = pseudo_label_pass(*nets, x, "box", box, refine=False, tau=0.0)
    assert torch.equal(unrefined.y2, b)


# --------------------------------------------------------------------------- weights


def test_fedmix_weights_hand_computation():
    # l^1.5 = (0.08944, 0.25298, 0.03162), s = (0.23914, 0.67632, 0.08454)
    # d = (100, 50, 30) / 180; w = (d + 10 s) / 11
    w = fedmix_weights([100, 50, 30], [0.2, 0.4, 0.1], lam=10.0, beta=1.5)
    assert w.tolist() == pytest.approx([0.26789, 0.64010, 0.09201], abs=1e-5)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_fedmix_weights_lambda_zero_is_data_share():
    w = fedmix_weights([100, 50, 30], [0.2, 0.4, 0.1], lam=0.0, beta=1.5)
    assert w.tolist() == pytest.approx([100 / 180, 50 / 180, 30 / 180], abs=1e-12)


def test_fedmix_weights_degenerate_inputs():
    # no selected data anywhere: the loss term alone; all losses zero: the data term alone
    assert fedmix_weights([0, 0], [0.1, 0.3], lam=1.0, beta=1.0).tolist() == pytest.approx(
        [0.25, 0.75]
    )
    assert fedmix_weights([30, 10], [0.0, 0.0]).tolist() == pytest.approx([0.75, 0.25])
    assert fedmix_weights([0, 0], [0.0, 0.0]).tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (([1], [0.1]), {"lam": -1.0}, ValueError,
         "fedmix_weights: 'lam' must be a float >= 0, got -1.0."),
        (([1], [0.1]), {"beta": -0.5}, ValueError,
         "fedmix_weights: 'beta' must be a float >= 0, got -0.5."),
        (([1, -2], [0.1, 0.2]), {}, ValueError,
         "fedmix_weights: 'num_selected' must be a non-empty sequence of finite numbers >= 0, "
         "got [1, -2]."),
        (([1, 2], [0.1, float("nan")]), {}, ValueError,
         "fedmix_weights: 'losses' must be a non-empty sequence of finite numbers >= 0, "
         "got [0.1, nan]."),
        (([1, 2], [0.1]), {}, ValueError,
         "fedmix_weights: 'num_selected' and 'losses' must have one entry per client, "
         "got 2 and 1."),
        ((["a"], [0.1]), {}, TypeError,
         "fedmix_weights: 'num_selected' must be a sequence of numbers, got ['a']."),
    ],
)
def test_fedmix_weights_validation(args, kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        fedmix_weights(*args, **kwargs)


# --------------------------------------------------------------------------- self-training


def test_confident_pixel_targets():
    p = torch.tensor([0.95, 0.6, 0.5, 0.05, 0.1, 0.91])
    target, mask = confident_pixel_targets(p)
    assert target.tolist() == [1, 1, 0, 0, 0, 1]
    assert mask.tolist() == [1, 0, 0, 1, 0, 1]


def test_masked_bce_averages_over_confident_pixels():
    z = torch.tensor([0.0, 0.0, 5.0])
    y = torch.tensor([1.0, 0.0, 1.0])
    m = torch.tensor([1.0, 1.0, 0.0])
    assert masked_bce(z, y, m).item() == pytest.approx(np.log(2), abs=1e-7)
    assert masked_bce(z, y, torch.zeros(3)).item() == 0.0


def test_gamma_adjust_per_image():
    x = torch.full((2, 1, 2, 2), 0.25)
    out = gamma_adjust(x, torch.tensor([1.0, 0.5]))
    assert out[0].unique().tolist() == [0.25] and out[1].unique().tolist() == [0.5]


def test_fedst_weights():
    # pixel client gets 0.9; the other two split 0.1 equally or by size (30 : 10)
    assert fedst_weights([True, False, False], [5, 30, 10]).tolist() == pytest.approx(
        [0.9, 0.05, 0.05]
    )
    assert fedst_weights([True, False, False], [5, 30, 10], split="size").tolist() == (
        pytest.approx([0.9, 0.075, 0.025])
    )
    assert fedst_weights([True, True, False], [10, 30, 7], pixel_share=0.5).tolist() == (
        pytest.approx([0.125, 0.375, 0.5])
    )
