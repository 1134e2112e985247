"""Helpers the chapters share (fedlib.chapter) and the SmallCNN factory."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from fedlib.chapter import (
    Interval,
    ListOf,
    Options,
    check_memory,
    check_parameters,
    check_yours,
    class_site_gallery,
    first_of_class,
    first_per_class,
    same_values,
    share_heatmap,
    short_site_name,
    side_by_side,
    site_gallery,
    synthderm_images,
)
from fedlib.data.base import ArrayDataset
from fedlib.data.synthderm import synthderm
from fedlib.models import SmallCNN

SEEDS_RULE = ListOf(Interval(int, 0, None), distinct=True)
RULES = {"SEEDS": SEEDS_RULE, "ROUNDS": Interval(int, 1, None), "SIZE": Options((28, 32))}


# --- parameters -------------------------------------------------------------------------------

def test_list_of_describes_itself():
    assert SEEDS_RULE.describe() == "a non-empty list of distinct ints >= 0"
    assert ListOf(Interval(float, 0, 1), max_len=3).describe() == (
        "a non-empty list of floats >= 0 and <= 1, at most 3 of them")


@pytest.mark.parametrize("value", [[0], [0, 1, 2], (3,)])
def test_list_of_accepts(value):
    assert SEEDS_RULE.is_satisfied_by(value)


@pytest.mark.parametrize("value", [[], 0, [0, 0], [0.5], [-1], ["0"], [True]])
def test_list_of_refuses(value):
    assert not SEEDS_RULE.is_satisfied_by(value)


def test_check_parameters_prints_the_values(capsys):
    check_parameters("Chapter 9", {"SEEDS": [0, 1], "ROUNDS": 3, "SIZE": 28}, RULES)
    assert capsys.readouterr().out.splitlines() == [
        "This run's parameters:",
        "  SEEDS  = [0, 1]",
        "  ROUNDS = 3",
        "  SIZE   = 28",
    ]


@pytest.mark.parametrize("seeds", [[], 0, [1, 1]])
def test_check_parameters_bad_seeds(seeds):
    with pytest.raises(ValueError, match=r"^Chapter 9: 'SEEDS' must be a non-empty list of "
                                         r"distinct ints >= 0, got "):
        check_parameters("Chapter 9", {"SEEDS": seeds, "ROUNDS": 3, "SIZE": 28}, RULES)


def test_check_parameters_bad_rounds():
    with pytest.raises(ValueError, match=r"^Chapter 9: 'ROUNDS' must be an int >= 1, got 0\.$"):
        check_parameters("Chapter 9", {"SEEDS": [0], "ROUNDS": 0, "SIZE": 28}, RULES)


def test_check_parameters_bad_option():
    with pytest.raises(ValueError, match=r"'SIZE' must be one of 28, 32, got 30\."):
        check_parameters("Chapter 9", {"SEEDS": [0], "ROUNDS": 1, "SIZE": 30}, RULES)


def test_check_parameters_missing():
    with pytest.raises(ValueError, match="Chapter 9: the parameter 'SIZE' is not set"):
        check_parameters("Chapter 9", {"SEEDS": [0], "ROUNDS": 1}, RULES)


def test_check_memory_names_parameters_and_limit():
    # 100,000 images * 4 bytes * (3 + 1) channels * 32 * 32 = 1,638,400,000 bytes = 1.53 GiB
    check_memory("Chapter 9", images=100_000, image_size=32, parameters={"SCALE": 1.0})
    with pytest.raises(ValueError) as error:
        check_memory("Chapter 9", images=100_000, image_size=32, limit_gib=1.0,
                     parameters={"LT_HEAD": 100000, "IMAGE_SIZE": 32})
    assert str(error.value) == (
        "Chapter 9: LT_HEAD = 100000, IMAGE_SIZE = 32 would generate 100,000 images, about 1.5 "
        "GiB in memory; the size guard allows 1 GiB. Lower LT_HEAD or IMAGE_SIZE.")


def test_check_memory_validates_its_own_inputs():
    with pytest.raises(ValueError, match="check_memory: 'images' must be an int >= 0, got -1"):
        check_memory("x", images=-1, image_size=32, parameters={})


def test_synthderm_images_counts_what_synthderm_generates():
    data = synthderm(scale=0.01, image_size=28)
    generated = int(data.class_counts("train").sum() + data.class_counts("test").sum())
    assert synthderm_images(scale=0.01) == generated
    counts = np.full((2, 8), 4)
    # train 4 per cell; test floor(4 * 0.25 + 0.5) = 1 per cell: 16 cells * 5
    assert synthderm_images(counts=counts) == 80
    with pytest.raises(ValueError, match="exactly one of 'scale' and 'counts'"):
        synthderm_images()


# --- write it yourself ------------------------------------------------------------------------

def solution(x):
    return {"w": torch.tensor([2.0, 4.0]) * x}


def reference():
    return {"w": torch.tensor([2.0, 4.0])}


def stub_raises(x):
    # 2 * x
    raise NotImplementedError


def stub_ellipsis(x):
    ...


def correct(x):
    return {"w": torch.tensor([2.0, 4.0]) * x}


def wrong(x):
    return {"w": torch.tensor([2.0, 5.0]) * x}


@pytest.mark.parametrize("stub", [stub_raises, stub_ellipsis])
def test_stub_falls_back_to_the_solution(stub):
    check = check_yours(stub, solution, (1.0,), reference=reference(), reference_name="fedlib's")
    assert not check.yours and check.matches
    torch.testing.assert_close(check.result["w"], torch.tensor([2.0, 4.0]))
    assert check.message == (
        f"{stub.__name__} is still a stub, so the folded solution ran, and it matches fedlib's. "
        f"Complete {stub.__name__} above and rerun this cell to check yours.")


def test_readers_correct_version_runs():
    check = check_yours(correct, solution, (1.0,), reference=reference(), reference_name="ref")
    assert check.yours and check.matches
    assert check.message == "Your correct ran, and it matches ref."


def test_readers_wrong_version_is_reported():
    check = check_yours(wrong, solution, (1.0,), reference=reference(), reference_name="ref")
    assert check.yours and not check.matches
    assert check.message.startswith("Your wrong ran, and it does not match ref ('w': ")


def test_readers_other_errors_propagate():
    def broken(x):
        return x["nope"]

    with pytest.raises(TypeError):
        check_yours(broken, solution, (1.0,), reference=reference(), reference_name="ref")


def test_same_values_reports_keys():
    ok, why = same_values({"a": torch.zeros(1)}, {"b": torch.zeros(1)})
    assert not ok and why == "keys differ (missing ['b'], unexpected ['a'])"
    assert same_values(torch.tensor(1.0), 1.0) == (True, "")


# --- looking at data --------------------------------------------------------------------------

def tiny_dataset(labels):
    n = len(labels)
    return ArrayDataset(torch.zeros(n, 3, 4, 4), torch.tensor(labels),
                        masks=torch.zeros(n, 1, 4, 4), boxes=torch.zeros(n, 4, dtype=torch.int64))


def test_first_per_class():
    data = tiny_dataset([2, 0, 2, 0, 0])
    assert first_per_class(data).tolist() == [1, 0]
    assert first_per_class(data, per_class=2).tolist() == [1, 3, 0, 2]


def test_first_of_class_cycles_and_reports_absence():
    data = tiny_dataset([2, 0, 2, 0, 0])
    assert first_of_class(data, 0) == 1
    assert first_of_class(data, 0, rank=4) == 3  # ranks cycle through [1, 3, 4]
    assert first_of_class(data, 1) is None


def test_short_site_name():
    assert short_site_name("HAM_vidir_molemax") == "molemax"
    assert short_site_name("HAM_rosendahl_and_more", max_len=9) == "rosendahl"


@pytest.fixture(scope="module")
def derm():
    return synthderm(scale=0.01, image_size=28)


def test_class_site_gallery_has_a_blank_per_missing_class(derm):
    fig = class_site_gallery(derm)
    titles = [a.text for a in fig.layout.annotations]
    counts = derm.class_counts("train")
    assert len(titles) == counts.size
    assert sum(t.split(": ")[1].startswith("no ") for t in titles) == int((counts == 0).sum())
    assert isinstance(fig.data[0], go.Image)


def test_site_gallery_shows_the_classes_of_each_site(derm):
    fig = site_gallery(derm, per_site=3)
    present = (derm.class_counts("train") > 0).sum(axis=1)
    assert len(fig.layout.annotations) == int(np.minimum(present, 3).sum())


def test_side_by_side_and_share_heatmap():
    real, synthetic = np.array([[3, 1], [0, 2]]), np.array([[6, 2], [0, 4]])
    frame = side_by_side(real, synthetic, ["a", "b"], ["s0", "s1"], "real", "syn")
    assert frame[("real", "total")].tolist() == [4, 2]
    assert frame[("syn", "total")].tolist() == [8, 4]
    fig = share_heatmap(real, synthetic, ["a", "b"], ["s0", "s1"], "real", "syn", "t")
    assert list(fig.data[0].y) == ["s0 · real", "s0 · syn", "s1 · real", "s1 · syn"]


# --- the model factory ------------------------------------------------------------------------

def test_factory_draws_no_random_numbers_and_builds_the_same_model():
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    make = SmallCNN.factory(in_channels=3, num_classes=5, width=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(1)
    built = make()
    torch.manual_seed(1)
    direct = SmallCNN(3, 5, width=4)
    for (name, a), (_, b) in zip(built.state_dict().items(), direct.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_factory_checks_its_options_now():
    with pytest.raises(ValueError, match="SmallCNN: 'width' must be an int >= 1, got 0"):
        SmallCNN.factory(num_classes=5, width=0)


def test_supervision_gallery_shows_what_each_client_trains_on():
    from fedlib.chapter import supervision_gallery
    from fedlib.data.segmentation import segmentation_view

    view = segmentation_view("synthbus", "fedmix", scale=0.05, image_size=32)
    fig = supervision_gallery([view], per_client=2)
    titles = [a.text for a in fig.layout.annotations]
    levels = [view.train[k].supervision for k in range(view.num_clients)]
    expected = zip(view.client_names, levels, strict=True)
    assert titles == [f"{site}: {level}" for site, level in expected for _ in range(2)]
    assert isinstance(fig.data[0], go.Image)
