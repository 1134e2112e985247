"""FedMix and its baselines: the maths on hand-made masks, then the federated methods.

Numbers in comments are worked by hand; spec references are to ``fedmix.md``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from fedlib.core.algorithm import build_model
from fedlib.core.protocol import ClientReply, ClientState, GlobalState, RoundMessage
from fedlib.data import segmentation_view
from fedlib.data.base import ArrayDataset
from fedlib.data.segmentation import SegmentationDataset
from fedlib.losses import soft_dice_loss
from fedlib.methods.fedmix import (
    IS_PIXEL,
    NET1_LOSS,
    NUM_TRAINED,
    ROUNDS_KEY,
    DualNetwork,
    FedMix,
    SegmentationFedAvg,
    SegmentationLocal,
    flip_views,
)
from fedlib.methods.fedst import FedST
from fedlib.metrics import dice_score
from fedlib.models import UNet
from fedlib.segmentation import (
    SEGMENTATION_METHODS,
    PseudoLabelTrace,
    SegmentationSimulation,
    evaluate_segmentation,
    evaluate_segmentation_run,
    fedmix_round_table,
    get_segmentation_method,
    is_segmentation,
    pseudo_label_figure,
    run_rounds,
    segmentation_summary,
)
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


# --------------------------------------------------------------------------- methods

def side(num_trained: float, loss: float) -> dict[str, torch.Tensor]:
    return {NUM_TRAINED: torch.tensor(num_trained), NET1_LOSS: torch.tensor(loss)}


def tiny_unet() -> UNet:
    return UNet(1, 1, width=2, depth=1)


@pytest.fixture(scope="module")
def bus():
    """SynthBUS at 16 px: image-level, box and pixel clients (12, 10 and 3 training images)."""
    return segmentation_view("synthbus", "fedmix", image_size=16, scale=0.08, seed=0)


def weak_dataset(level: str, masks: torch.Tensor) -> SegmentationDataset:
    n = len(masks)
    source = ArrayDataset(torch.rand(n, 1, 8, 8), torch.zeros(n, dtype=torch.int64), masks=masks)
    return SegmentationDataset(source, level, box_margin=0)


def context(alg, model, data, *, round_=0, seed=0):
    message = alg.message_for(alg.init_global(model), 0)
    message = RoundMessage(round=round_, arrays=message.arrays, config=message.config)
    ctx = alg.local_context(
        model, message, ClientState(), data, client_id=0, num_classes=2,
        generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"),
    )
    ctx.extras["model"] = model
    return ctx


def test_cross_pseudo_supervision_net1_learns_net2s_labels():
    masks = torch.cat([square(8, 0, 0, 6), square(8, 2, 2, 5)])
    data = weak_dataset("none", masks)
    a = torch.cat([square(8, 0, 0, 6), square(8, 2, 2, 5)])
    b = a.clone()
    b[0, 0, 0, 0] = 0  # 35 of 36 px: Dice 70 / 71 > 0.9, distinct from a
    b[1, 0, 2, 2] = 0
    model = DualNetwork(FixedLogits(logits_of(a)), FixedLogits(logits_of(b)))
    alg = FedMix(augment="none")
    view = alg.training_view(context(alg, model, data))
    assert len(view) == 2
    assert torch.equal(view.labels[:, 0], b)  # net1's target: net2's pseudo-label
    assert torch.equal(view.labels[:, 1], a)  # net2's target: net1's pseudo-label
    assert torch.equal(view.images, data.images)


def test_flip_views_flip_image_and_mask_together():
    gen = torch.Generator().manual_seed(0)
    images = torch.arange(4 * 16.0).view(4, 1, 4, 4)
    x, y = flip_views([images, images.clone()], gen)
    assert torch.equal(x, y)
    assert not torch.equal(x, images)  # some view flipped (seed 0)
    assert sorted(x.sum((1, 2, 3)).tolist()) == sorted(images.sum((1, 2, 3)).tolist())


def test_weak_client_with_nothing_selected_sends_no_update():
    # net1 predicts a square, net2 nothing: Dice ~ 0 < tau, so no image is kept (skip, not Q1)
    masks = square(8, 0, 0, 4).repeat(3, 1, 1, 1)
    data = weak_dataset("box", masks)
    model = DualNetwork(FixedLogits(logits_of(masks)), FixedLogits(logits_of(0 * masks)))
    model.register_parameter("bias", nn.Parameter(torch.zeros(1)))
    alg = FedMix()
    message = alg.message_for(alg.init_global(model), 0)
    reply, _ = alg.client_update(
        model, message, ClientState(), data, client_id=0, num_classes=1,
        initial_weights=model.state_dict(), generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )
    assert reply.side[NUM_TRAINED].item() == 0.0
    assert all(torch.equal(reply.arrays[k], message.arrays[k]) for k in message.arrays)
    pixel = ClientReply(1, {}, 5, side=side(5.0, 0.3))
    box = ClientReply(2, {}, 8, side=side(4.0, 0.5))
    w = alg.client_weights([reply, pixel, box])
    assert w[0] == 0.0
    assert w[1:] == pytest.approx(fedmix_weights([5, 4], [0.3, 0.5], 10.0, 1.5).tolist())
    assert sum(w) == pytest.approx(1.0)


def test_aggregation_applies_the_same_weights_to_both_networks():
    keys = ("net1.conv.weight", "net1.norm.weight", "net2.conv.weight", "net2.norm.weight")
    replies = [
        ClientReply(
            k,
            {key: torch.full((2,), float(k + 1) * (i + 1)) for i, key in enumerate(keys)},
            10,
            side=side(n, loss),
        )
        for k, (n, loss) in enumerate([(100.0, 0.2), (50.0, 0.4), (30.0, 0.1)])
    ]
    state = GlobalState(
        weights={key: torch.zeros(2) for key in keys}, extra={"shared_keys": list(keys)}
    )
    new = FedMix().aggregate(state, replies)
    w = [0.26789, 0.64010, 0.09201]  # the hand computation above
    for i, key in enumerate(keys):
        expected = sum(wk * (k + 1) * (i + 1) for k, wk in enumerate(w))
        assert new.weights[key].tolist() == pytest.approx([expected] * 2, abs=1e-4)
    logged = new.extra[ROUNDS_KEY][-1]
    assert logged["weights"] == pytest.approx(w, abs=1e-5)
    assert logged["num_trained"] == [100.0, 50.0, 30.0]


def test_lambda_zero_weights_by_selected_images_static_by_dataset_size():
    replies = [
        ClientReply(k, {}, size, side=side(n, loss))
        for k, (size, n, loss) in enumerate([(40, 10.0, 0.9), (20, 20.0, 0.1)])
    ]
    assert FedMix(fedmix_lambda=0.0).client_weights(replies) == pytest.approx([1 / 3, 2 / 3])
    assert FedMix(fedmix_lambda=0.0, data_term="static").client_weights(replies) == (
        pytest.approx([2 / 3, 1 / 3])
    )


def test_dual_network_nets_start_independently_and_forward_is_net1():
    model = build_model(lambda: FedMix().prepare_model(tiny_unet()), seed=0)
    again = build_model(lambda: FedMix().prepare_model(tiny_unet()), seed=0)
    one, two = model.net1.state_dict(), model.net2.state_dict()
    conv = "encoder.0.0.conv.weight"
    assert not torch.equal(one[conv], two[conv])
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(model(x), model.net1(x))
    assert FedMix().shared_keys(model) == list(model.state_dict())


class Forbidden:
    """Stands for the true masks of a weak client's training split: any use raises."""

    def __getattr__(self, name):
        raise AssertionError(f"a weak client read its true masks ({name})")

    def __getitem__(self, index):
        raise AssertionError("a weak client read its true masks")

    def __len__(self):
        raise AssertionError("a weak client read its true masks")


def hide_weak_masks(federation):
    for k in federation.client_ids():
        split = federation.train[k]
        if split.supervision != "pixel":
            split.true_masks = Forbidden()
            split.source.masks = Forbidden()


@pytest.mark.parametrize(
    "algorithm",
    [FedMix(batch_size=8), FedMix(batch_size=8, tau=0.0), FedST(batch_size=8, warmup_rounds=1),
     SegmentationFedAvg(batch_size=8)],
    ids=["fedmix", "fedmix-tau0", "fedst", "fedavg-strong"],
)
def test_weak_client_never_trains_on_ground_truth_masks(algorithm):
    fed = segmentation_view("synthbus", "fedmix", image_size=16, scale=0.08, seed=1)
    hide_weak_masks(fed)
    sim = SegmentationSimulation(algorithm, tiny_unet, fed, num_rounds=2, progress=False)
    history = sim.run()
    assert len(history.round_records) == 2
    assert "gen_client_mean_dice" in history.round_records[-1]


def test_fedmix_runs_and_is_deterministic(bus):
    def run():
        sim = SegmentationSimulation(
            FedMix(batch_size=8, tau=0.0), tiny_unet, bus, num_rounds=2, progress=False, seed=3
        )
        sim.run()
        return sim
    a, b = run(), run()
    assert all(torch.equal(v, b.state_.weights[k]) for k, v in a.state_.weights.items())
    rounds = a.state_.extra[ROUNDS_KEY]
    assert len(rounds) == 2 and sum(rounds[-1]["weights"]) == pytest.approx(1.0)
    # tau = 0 keeps every image: n_i is each client's training-set size
    assert rounds[0]["num_trained"] == [float(len(bus.train[k])) for k in bus.client_ids()]
    rows = [r for r in a.history_.client_records if r["round"] == 2]
    assert {r["client"] for r in rows} == {0, 1, 2}
    assert all(0.0 <= r["gen_dice"] <= 1.0 for r in rows)


def test_fedavg_strong_trains_only_the_pixel_client(bus):
    alg = SegmentationFedAvg(batch_size=8)
    sim = SegmentationSimulation(alg, tiny_unet, bus, num_rounds=1, progress=False)
    replies = sim.local_updates()
    assert [r.side[NUM_TRAINED].item() for r in replies] == [0.0, 0.0, float(len(bus.train[2]))]
    assert alg.client_weights(replies) == [0.0, 0.0, float(len(bus.train[2]))]


def test_local_learning_shares_nothing_and_evaluates_own_models():
    fed = segmentation_view("synthbus", "full", image_size=16, scale=0.08, seed=0)
    sim = SegmentationSimulation(
        SegmentationLocal(batch_size=8), tiny_unet, fed, num_rounds=1, progress=False
    )
    record = sim.run().round_records[-1]
    assert sim.state_.extra["shared_keys"] == []
    assert 0.0 <= record["spec_dice"] <= 1.0


def test_fedst_warmup_then_self_training_with_fixed_shares(bus):
    alg = FedST(batch_size=8, warmup_rounds=1)
    sim = SegmentationSimulation(alg, tiny_unet, bus, num_rounds=1, progress=False)
    warm = sim.local_updates()
    assert [r.side[NUM_TRAINED].item() for r in warm] == [0.0, 0.0, float(len(bus.train[2]))]
    sim.run()
    after = sim.local_updates()
    assert [r.side[IS_PIXEL].item() for r in after] == [0.0, 0.0, 1.0]
    assert all(r.side[NUM_TRAINED].item() == len(bus.train[k]) for k, r in enumerate(after))
    assert "confident_share" in after[0].metrics
    assert alg.client_weights(after) == pytest.approx([0.05, 0.05, 0.9])


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (FedMix, {"tau": 1.1}, "FedMix: 'tau' must be a float >= 0 and <= 1, got 1.1."),
        (FedMix, {"box_coverage_min": -1.0},
         "FedMix: 'box_coverage_min' must be a float >= 0 and <= 1, got -1.0."),
        (FedMix, {"fedmix_lambda": -1.0},
         "FedMix: 'fedmix_lambda' must be a float >= 0, got -1.0."),
        (FedMix, {"fedmix_beta": -1.0}, "FedMix: 'fedmix_beta' must be a float >= 0, got -1.0."),
        (FedMix, {"refine": "yes"}, "FedMix: 'refine' must be one of True, False, got 'yes'."),
        (FedMix, {"agree_after_refine": 0},
         "FedMix: 'agree_after_refine' must be one of True, False, got 0."),
        (FedMix, {"reject_empty_pl": None},
         "FedMix: 'reject_empty_pl' must be one of True, False, got None."),
        (FedMix, {"data_term": "all"},
         "FedMix: 'data_term' must be one of 'selected', 'static', got 'all'."),
        (SegmentationFedAvg, {"augment": "crop"},
         "SegmentationFedAvg: 'augment' must be one of 'flip', 'none', got 'crop'."),
        (FedST, {"warmup_rounds": -1}, "FedST: 'warmup_rounds' must be an int >= 0, got -1."),
        (FedST, {"confidence": 0.5},
         "FedST: 'confidence' must be a float > 0.5 and <= 1, got 0.5."),
        (FedST, {"pixel_share": 2.0},
         "FedST: 'pixel_share' must be a float >= 0 and <= 1, got 2.0."),
        (FedST, {"fedst_share": "size2"},
         "FedST: 'fedst_share' must be one of 'equal', 'size', got 'size2'."),
        (FedST, {"gamma_max": 0.0}, "FedST: 'gamma_max' must be a float > 0, got 0.0."),
    ],
)
def test_method_validation(cls, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=f"^{re.escape(message)}$"):
        cls(**kwargs)


# --------------------------------------------------------------------------- evaluation


def test_evaluate_segmentation_hand_made(bus):
    test = bus.test[2]
    truth = test.true_masks
    perfect = FixedLogits(logits_of(truth))
    scores = evaluate_segmentation(perfect, test, batch_size=len(test) + 5)
    assert scores == {"dice": 1.0, "num_images": float(len(test))}
    empty = FixedLogits(torch.full_like(truth, -5.0))
    # every test image shows a lesion: an empty prediction scores eps / (m + eps) each
    sizes = truth.flatten(1).sum(1).double()
    expected = float((1e-4 / (sizes + 1e-4)).mean())
    assert evaluate_segmentation(empty, test)["dice"] == pytest.approx(expected, rel=1e-6)


def test_evaluation_refuses_a_split_that_hides_its_masks(bus):
    with pytest.raises(ValueError, match="hides its true masks"):
        evaluate_segmentation(tiny_unet(), bus.train[0])


def test_segmentation_summary_names_clients_and_means(bus):
    models = {k: FixedLogits(logits_of(bus.test[k].true_masks)) for k in bus.client_ids()}
    models[0] = FixedLogits(torch.full_like(bus.test[0].true_masks, -5.0))
    summary = segmentation_summary(models.__getitem__, bus)
    assert list(summary["dice_per_client"]) == list(bus.client_names)
    assert summary["dice_per_client"]["UDIAT"] == 1.0
    per = list(summary["dice_per_client"].values())
    assert summary["dice_mean"] == pytest.approx(sum(per) / 3)
    assert is_segmentation(bus)


def test_segmentation_methods_by_name():
    assert sorted(SEGMENTATION_METHODS) == ["fedavg", "fedmix", "fedst", "local"]
    assert get_segmentation_method("fedmix", tau=0.5).tau == 0.5
    assert isinstance(get_segmentation_method("fedavg"), SegmentationFedAvg)
    with pytest.raises(ValueError, match="unknown method 'fedprox'; valid segmentation methods"):
        get_segmentation_method("fedprox")
    with pytest.raises(TypeError, match=re.escape("FedMix: unknown option(s) ['mu']")):
        get_segmentation_method("fedmix", mu=0.1)


def test_run_summary_reports_dice_per_client_and_mean():
    fed = segmentation_view("synthbus", "full", image_size=16, scale=0.08, seed=0)
    sim = SegmentationSimulation(
        SegmentationLocal(batch_size=8), tiny_unet, fed, num_rounds=1, progress=False
    )
    sim.run()
    summary = evaluate_segmentation_run(sim)
    assert list(summary["gen_dice_per_client"]) == list(fed.client_names)
    own = summary["spec_dice_per_client"]
    assert summary["spec_dice"] == pytest.approx(sum(own.values()) / 3)
    assert summary["spec_dice"] == pytest.approx(sim.history_.round_records[-1]["spec_dice"])


# --------------------------------------------------------------------------- watching a run


def test_run_rounds_equals_one_run_and_traces_every_round(bus):
    def make():
        return SegmentationSimulation(FedMix(batch_size=8, tau=0.5), tiny_unet, bus,
                                      num_rounds=2, progress=False, seed=4)

    whole = make()
    whole.run()
    stepped = make()
    trace = PseudoLabelTrace(examples={0: [0, 2], 1: [1]})
    run_rounds(stepped, trace)
    assert stepped.num_rounds == 2
    assert all(torch.equal(v, whole.state_.weights[k]) for k, v in stepped.state_.weights.items())
    assert trace.rounds == [0, 1, 2]
    assert set(trace.agreement[0]) == {0, 1}  # the weak clients only
    assert trace.labels[-1][0].shape == (2, 2, 1, 16, 16)
    assert np.isnan(trace.coverage[0][0]).all() and not np.isnan(trace.coverage[0][1]).any()
    # the recorded selection is the one the method's options give
    assert trace.kept_share(0.5)[1].tolist() == [float(k.mean()) for k in
                                                  (r[1] for r in trace.keep)]
    assert (trace.kept_share(0.0, 0.0)[0] == 1.0).all()
    table = fedmix_round_table(stepped)
    assert list(table["round"]) == [1, 1, 1, 2, 2, 2]
    assert table.groupby("round").weight.sum().tolist() == pytest.approx([1.0, 1.0])
    figure = pseudo_label_figure(trace, bus)
    assert len(figure.data) == 3 and len(figure.layout.sliders[0].steps) == 3
    assert sum(trace.visible is not False for trace in figure.data) == 1


def test_trace_needs_fedmix(bus):
    sim = SegmentationSimulation(SegmentationFedAvg(batch_size=8), tiny_unet, bus,
                                 num_rounds=1, progress=False)
    with pytest.raises(TypeError, match="must run FedMix, got SegmentationFedAvg"):
        PseudoLabelTrace(examples={})(sim)
