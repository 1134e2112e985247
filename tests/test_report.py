"""The sentences chapters print about their results (fedlib.report)."""

from __future__ import annotations

import math

import pytest

from fedlib.report import (
    PAGE_WIDTH,
    alignment,
    compare,
    format_mean_spread,
    gap_closed,
    leader,
    mean_spread,
    say,
    seeds_phrase,
    trend,
    verdict,
    wrap,
)

# --- mean and spread --------------------------------------------------------------------------

def test_mean_spread_is_sample_std():
    mean, spread = mean_spread([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert spread == 1.0  # sqrt(((1-2)^2 + 0 + (3-2)^2) / (3 - 1))


def test_one_value_has_no_spread():
    assert mean_spread([0.25]) == (0.25, None)


def test_format_mean_spread():
    assert format_mean_spread([1.0, 2.0, 3.0]) == "2.000 ± 1.000"
    assert format_mean_spread([0.4567], digits=2) == "0.46 (one seed)"
    assert format_mean_spread([0.1, 0.3], signed=True) == "+0.200 ± 0.141"
    assert format_mean_spread([-0.0001], signed=True) == "+0.000 (one seed)"


@pytest.mark.parametrize("values", [[], [0.1, float("nan")], [float("inf")]])
def test_mean_spread_rejects_empty_or_non_finite(values):
    with pytest.raises(ValueError, match="mean_spread: 'values' must"):
        mean_spread(values)


def test_seeds_phrase():
    assert seeds_phrase(1) == "one seed"
    assert seeds_phrase(3) == "3 seeds"
    with pytest.raises(ValueError, match="seeds_phrase: 'n' must be an int >= 1, got 0"):
        seeds_phrase(0)


# --- paired comparison ------------------------------------------------------------------------

def test_compare_ahead_in_every_seed():
    result = compare("FedAvg", [0.50, 0.60, 0.70], "local", [0.25, 0.35, 0.55], metric="BAcc")
    assert result.verdict == "ahead"
    assert result.diffs == pytest.approx((0.25, 0.25, 0.15))
    assert result.ahead_in == 3
    # mean 0.65/3, std of (0.25, 0.25, 0.15) = sqrt((2 * (1/30)^2 + (2/30)^2) / 2) = 0.0577
    assert result.sentence == ("FedAvg vs local, BAcc: +0.217 ± 0.058 over 3 seeds; "
                               "FedAvg ahead in all 3 seeds.")


def test_compare_behind_in_every_seed():
    result = compare("A", [0.1, 0.2], "B", [0.3, 0.4], metric="m")
    assert result.verdict == "behind"
    assert result.sentence.endswith("A behind in both seeds.")


def test_compare_mixed_is_not_a_finding():
    result = compare("A", [0.5, 0.3, 0.4], "B", [0.4, 0.4, 0.4], metric="m")
    assert result.verdict == "mixed"
    assert result.ahead_in == 1
    assert "ahead in 1 of 3, behind in 1: within the noise, not a finding" in result.sentence


def test_compare_tie_in_one_seed_is_mixed():
    assert compare("A", [0.5, 0.4], "B", [0.4, 0.4], metric="m").verdict == "mixed"


def test_compare_one_seed_says_no_spread():
    result = compare("A", [0.5], "B", [0.3], metric="m")
    assert result.verdict == "one seed"
    assert result.sentence == ("A vs B, m: +0.200 in the one seed run; one seed: no spread, "
                               "so no finding either way.")
    assert "nan" not in result.sentence


def test_compare_rejects_unpaired_values():
    with pytest.raises(ValueError, match="compare: 'a_values' and 'b_values' must hold one "
                                         "value per seed each, got 2 and 3"):
        compare("A", [0.1, 0.2], "B", [0.1, 0.2, 0.3], metric="m")


def test_compare_rejects_nan():
    with pytest.raises(ValueError, match="compare: 'b_values' must be finite"):
        compare("A", [0.1], "B", [float("nan")], metric="m")


# --- the gap sentence -------------------------------------------------------------------------

def test_gap_closed_share():
    text = gap_closed("local", [0.2, 0.2], "FedAvg", [0.35, 0.25], "pooled", [0.4, 0.4])
    # means 0.2, 0.3, 0.4: (0.3 - 0.2) / (0.4 - 0.2) = 50 %
    assert text == ("FedAvg closes 50% of the gap from local (0.200) to pooled (0.400), "
                    "means over 2 seeds.")


def test_gap_closed_negative_gap_has_no_share():
    text = gap_closed("local", [0.4], "FedAvg", [0.3], "pooled", [0.2])
    assert text == ("pooled (0.200) is not above local (0.400): there is no gap for FedAvg to "
                    "close; one seed: no spread.")
    assert "%" not in text


def test_gap_closed_zero_gap_has_no_share():
    text = gap_closed("local", [0.3, 0.3], "FedAvg", [0.5, 0.5], "pooled", [0.3, 0.3])
    assert "is not above" in text and "%" not in text


def test_gap_closed_gap_within_noise():
    text = gap_closed("local", [0.2, 0.5], "FedAvg", [0.3, 0.3], "pooled", [0.3, 0.45])
    assert "not in every seed" in text and "%" not in text


def test_gap_closed_no_improvement():
    text = gap_closed("local", [0.3], "FedAvg", [0.25], "pooled", [0.5])
    assert text == "FedAvg (0.250) does not improve on local (0.300); one seed: no spread."


def test_gap_closed_whole_gap():
    text = gap_closed("local", [0.2], "FedAvg", [0.6], "pooled", [0.5])
    assert text.startswith("FedAvg (0.600) reaches pooled (0.500): it closes the whole gap")
    assert "%" not in text


def test_gap_closed_rejects_unequal_seed_counts():
    with pytest.raises(ValueError, match="gap_closed: every method needs one value per seed"):
        gap_closed("a", [0.1], "b", [0.1, 0.2], "c", [0.3])


# --- leader -----------------------------------------------------------------------------------

def test_leader_ahead_of_everyone_in_every_seed():
    text = leader({"A": [0.5, 0.6, 0.7], "B": [0.4, 0.5, 0.6], "C": [0.1, 0.1, 0.1]},
                  metric="BAcc")
    assert text == "BAcc: A leads, ahead of every other method in all 3 seeds (A 0.600 ± 0.100)."


def test_leader_within_noise_names_no_single_leader():
    text = leader({"A": [0.5, 0.9], "B": [0.6, 0.5], "C": [0.1, 0.1]}, metric="BAcc")
    assert text == ("BAcc: highest mean A 0.700 ± 0.283, but not ahead in every seed of B: "
                    "no single leader.")


def test_leader_one_seed_is_no_ranking():
    text = leader({"A": [0.5], "B": [0.7]}, metric="few")
    assert text == ("few: highest in the one seed run: B (0.700); one seed: no spread, "
                    "no ranking.")
    assert "leads" not in text and "best" not in text


def test_leader_needs_results():
    with pytest.raises(ValueError, match="leader: 'results' must name at least one method"):
        leader({}, metric="m")


# --- trend, alignment, wrapping ---------------------------------------------------------------

@pytest.mark.parametrize(("values", "word"), [
    ([1.17, 1.04, 0.97], "falls"),
    ([0.259, 0.270, 0.315], "rises"),
    ([1.0, 2.0, 1.5], "goes up and down"),
    ([2.0, 2.0], "stays the same"),
    ([2.0], "stays the same"),
])
def test_trend(values, word):
    assert trend(values) == word


@pytest.mark.parametrize(("cosine", "words"), [
    (0.97, "nearly parallel"), (0.9, "nearly parallel"), (0.6, "aligned"),
    (0.3, "weakly aligned"), (0.2, "nearly orthogonal"), (-0.2, "nearly orthogonal"),
    (-0.5, "opposed"),
])
def test_alignment(cosine, words):
    assert alignment(cosine) == words


def test_alignment_rejects_impossible_cosines():
    with pytest.raises(ValueError, match=r"alignment: 'cosine' must be a number in \[-1, 1\]"):
        alignment(math.nan)


def test_wrap_keeps_lines_on_the_page(capsys):
    sentence = "word " * 60
    assert all(len(line) <= PAGE_WIDTH for line in wrap(sentence).splitlines())
    say(sentence, "short")
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "short"
    assert all(len(line) <= PAGE_WIDTH for line in lines)
    assert lines[1].startswith("  ")  # continuation lines are indented


# --- verdicts on hypotheses -------------------------------------------------------------------

def test_verdict_supported():
    c = compare("BSM", [0.5, 0.6, 0.7], "CE", [0.4, 0.5, 0.6], metric="BAcc")
    assert verdict(c, "ahead") == "supported: BSM ahead of CE in all 3 seeds (+0.100 ± 0.000)."


def test_verdict_contradicted_and_not_shown():
    behind = compare("A", [0.1, 0.2], "B", [0.3, 0.4], metric="m")
    assert verdict(behind, "ahead") == "contradicted: A behind B in both seeds (-0.200 ± 0.000)."
    assert verdict(behind, "mixed").startswith("contradicted: ")
    mixed = compare("A", [0.5, 0.3, 0.4], "B", [0.4, 0.4, 0.4], metric="m")
    assert verdict(mixed, "ahead") == ("not shown: A ahead of B in 1 of 3 seeds "
                                       "(+0.000 ± 0.100).")
    assert verdict(mixed, "mixed").startswith("supported: ")


def test_verdict_one_seed_is_untested():
    c = compare("A", [0.5], "B", [0.3], metric="m")
    assert verdict(c, "ahead") == "untested (one seed): A +0.200 against B."


def test_verdict_checks_expected():
    c = compare("A", [0.5], "B", [0.3], metric="m")
    with pytest.raises(ValueError, match="verdict: 'expected' must be one of 'ahead', 'behind', "
                                         "'mixed', got 'better'"):
        verdict(c, "better")
