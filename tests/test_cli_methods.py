"""The CLI with the NPR plug-in and with a two-head method (FCA's four head pairings)."""

from __future__ import annotations

import json

import pytest

from fedlib.cli import main

TINY = ["--dataset", "synthderm", "--data-option", "scale=0.02", "--data-option",
        "image_size=28", "--rounds", "1", "--seeds", "0", "--no-progress"]


def test_npr_plug_in_from_the_command_line(tmp_path):
    out = tmp_path / "npr"
    assert main(["run", "--method", "fedprox", "--set", "npr=true", "--set", "npr_lambda=0.5",
                 "--out", str(out), *TINY]) == 0
    options = json.loads((out / "seed0" / "summary.json").read_text())["options"]
    assert options["npr"] is True and options["npr_lambda"] == 0.5 and options["mu"] == 0.01


def test_npr_options_need_the_plug_in(tmp_path):
    with pytest.raises(SystemExit, match="fedlib run: method 'fedavg' has no option 'npr_lambda'"):
        main(["run", "--method", "fedavg", "--set", "npr_lambda=0.5",
              "--out", str(tmp_path / "x"), *TINY])


def test_fca_summary_holds_all_four_head_pairings(tmp_path):
    out = tmp_path / "fca"
    assert main(["run", "--method", "fca", "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "seed0" / "summary.json").read_text())
    pairs = {(r["fca_global_head"], r["fca_local_head"]): r for r in summary["head_pairings"]}
    assert set(pairs) == {("fed", "per"), ("fed", "fed"), ("per_avg", "per"), ("per_avg", "fed")}
    assert [p for p, r in pairs.items() if r["default"]] == [("fed", "per")]
    assert pairs[("fed", "per")]["gen_balanced_accuracy"] == summary["gen_balanced_accuracy"]
    assert pairs[("fed", "per")]["spec_balanced_accuracy"] == summary["spec_balanced_accuracy"]


def test_methods_lists_the_plug_in_options(capsys):
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    assert "--set npr=true" in text and "npr_lambda = 0.05" in text
    assert "fca:" in text and "fca_lambda_per = 3.0" in text


SEG = ["--data-option", "scale=0.05", "--data-option", "image_size=32", "--rounds", "1",
       "--seeds", "0", "--no-progress", "--width", "4"]


def test_segmentation_runs_report_dice_per_client(tmp_path):
    out = tmp_path / "fedmix"
    assert main(["run", "--method", "fedmix", "--dataset", "synthbus_seg", "--out", str(out),
                 *SEG]) == 0
    summary = json.loads((out / "seed0" / "summary.json").read_text())
    assert set(summary["gen_dice_per_client"]) == {"BUSI", "BUSIS", "UDIAT"}
    values = list(summary["gen_dice_per_client"].values())
    assert summary["gen_dice"] == pytest.approx(sum(values) / 3)
    config = json.loads((out / "seed0" / "config.json").read_text())
    assert config["task"] == "segmentation" and config["model"]["name"] == "UNet"
    local = tmp_path / "local"
    assert main(["run", "--method", "local", "--dataset", "synthderm_seg", "--data-option",
                 "supervision=full", "--out", str(local), *SEG]) == 0
    summary = json.loads((local / "seed0" / "summary.json").read_text())
    assert len(summary["spec_dice_per_client"]) == 4 and 0 <= summary["spec_dice"] <= 1


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--method", "fedprox", "--dataset", "synthbus_seg"],
         "unknown method 'fedprox' for the segmentation dataset 'synthbus_seg'; valid "
         "methods: fedavg, fedmix, fedst, local"),
        (["--method", "fedmix", "--dataset", "synthbus_seg", "--set", "npr=true"],
         "npr=true is a plug-in for classification methods"),
        (["--method", "fedmix", "--dataset", "synthbus_seg", "--partition", "dirichlet"],
         "'synthbus_seg' is a segmentation federation with fixed clients"),
    ],
)
def test_segmentation_runs_refuse_what_does_not_apply(tmp_path, argv, match):
    with pytest.raises(SystemExit, match=match):
        main(["run", *argv, "--out", str(tmp_path / "x"), *SEG])
    assert not (tmp_path / "x").exists()
