"""Sentences about results that stay true for any parameters.

A chapter states its findings by calling these functions on the per-seed results it shows, so
the sentence is computed, not typed, and it says so when its premise fails: with one seed there
is no spread and no ranking; a gap that is not positive cannot be "closed"; a difference whose
sign changes from seed to seed is not a finding.

The book's rule for a difference between two methods run with the same seeds (same initial
weights, same batch order) is the paired one of its chapters: with ``d_s = a_s - b_s`` the
difference in seed ``s`` of ``n`` seeds,

- ``a`` is *ahead* of ``b`` when ``d_s > 0`` for every seed (``n >= 2``), *behind* when
  ``d_s < 0`` for every seed, and *mixed* otherwise;
- one seed (``n = 1``) gives no spread, and no finding either way.

The spread reported next to a mean is the sample standard deviation over seeds (``ddof=1``).

Every function returns plain text; :func:`say` prints it wrapped to the width of a book page.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedlib._validation import Interval, Options, check_param

__all__ = [
    "Comparison",
    "alignment",
    "compare",
    "format_mean_spread",
    "gap_closed",
    "leader",
    "mean_spread",
    "say",
    "seeds_phrase",
    "trend",
    "verdict",
    "wrap",
]

PAGE_WIDTH = 78
"""Characters of a printed line that fit a book page without a scrollbar."""


def _values(owner: str, name: str, values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{owner}: {name!r} must hold at least one value, got none.")
    if not np.isfinite(array).all():
        raise ValueError(f"{owner}: {name!r} must be finite, got {array.tolist()}.")
    return array


def _signed(value: float, digits: int) -> str:
    """``+0.123``; a value that rounds to zero prints as ``+0.000``, never ``-0.000``."""
    return f"{round(float(value), digits) + 0.0:+.{digits}f}"


def seeds_phrase(n: int) -> str:
    """``"one seed"`` or ``"3 seeds"``."""
    check_param("seeds_phrase", "n", n, Interval(int, 1, None))
    return "one seed" if n == 1 else f"{n} seeds"


def mean_spread(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof=1``); the spread is ``None`` for one value.

    >>> mean_spread([0.2, 0.4])
    (0.30000000000000004, 0.14142135623730953)
    >>> mean_spread([0.5])
    (0.5, None)
    """
    array = _values("mean_spread", "values", values)
    if array.size == 1:
        return float(array[0]), None
    return float(array.mean()), float(array.std(ddof=1))


def format_mean_spread(values: Sequence[float], digits: int = 3, *, signed: bool = False) -> str:
    """``"0.300 ± 0.141"``, or ``"0.500 (one seed)"`` where there is no spread.

    ``signed=True`` writes the mean with its sign (``"+0.300 ± 0.141"``), for differences.

    >>> format_mean_spread([0.2, 0.4])
    '0.300 ± 0.141'
    >>> format_mean_spread([-0.5], signed=True)
    '-0.500 (one seed)'
    """
    check_param("format_mean_spread", "digits", digits, Interval(int, 0, 10))
    mean, spread = mean_spread(values)
    shown = _signed(mean, digits) if signed else f"{mean:.{digits}f}"
    if spread is None:
        return f"{shown} (one seed)"
    return f"{shown} ± {spread:.{digits}f}"


@dataclass(frozen=True)
class Comparison:
    """Method ``a`` against method ``b`` on one metric, paired by seed.

    Attributes
    ----------
    a, b, metric : str
    diffs : tuple of float
        ``a_s - b_s`` per seed.
    verdict : {"ahead", "behind", "mixed", "one seed"}
        See the module docstring.
    sentence : str
        The comparison in words, e.g. ``"FedAvg vs local-only, pooled: +0.170 ± 0.048, FedAvg
        ahead in 3 of 3 seeds."``
    """

    a: str
    b: str
    metric: str
    diffs: tuple[float, ...]
    verdict: str
    sentence: str

    @property
    def mean(self) -> float:
        return float(np.mean(self.diffs))

    @property
    def ahead_in(self) -> int:
        """Seeds in which ``a`` is strictly ahead of ``b``."""
        return int(sum(d > 0 for d in self.diffs))


def compare(
    a: str,
    a_values: Sequence[float],
    b: str,
    b_values: Sequence[float],
    *,
    metric: str,
    digits: int = 3,
) -> Comparison:
    """Compare two methods' per-seed results, paired by seed (``a_values[s]`` with ``b_values[s]``).

    Parameters
    ----------
    a, b : str
        Names of the methods, as the sentence should print them.
    a_values, b_values : sequence of float, same length n >= 1
        One finite result per seed, in the same seed order.
    metric : str
        What was measured (printed).
    digits : int, default 3

    Returns
    -------
    Comparison

    Examples
    --------
    >>> compare("BSM", [0.5, 0.6], "CE", [0.4, 0.5], metric="BAcc").sentence
    'BSM vs CE, BAcc: +0.100 ± 0.000 over 2 seeds; BSM ahead in both seeds.'
    >>> compare("BSM", [0.5], "CE", [0.4], metric="BAcc").verdict
    'one seed'
    """
    owner = "compare"
    check_param(owner, "digits", digits, Interval(int, 0, 10))
    first = _values(owner, "a_values", a_values)
    second = _values(owner, "b_values", b_values)
    if first.shape != second.shape:
        raise ValueError(
            f"{owner}: 'a_values' and 'b_values' must hold one value per seed each, got "
            f"{first.size} and {second.size}."
        )
    diffs = first - second
    n = diffs.size
    head = f"{a} vs {b}, {metric}: "
    if n == 1:
        sentence = (f"{head}{_signed(diffs[0], digits)} in the one seed run; one seed: no "
                    "spread, so no finding either way.")
        return Comparison(a, b, metric, (float(diffs[0]),), "one seed", sentence)
    mean, spread = float(diffs.mean()), float(diffs.std(ddof=1))
    ahead, behind = int((diffs > 0).sum()), int((diffs < 0).sum())
    every = "both seeds" if n == 2 else f"all {n} seeds"
    numbers = f"{head}{_signed(mean, digits)} ± {spread:.{digits}f} over {n} seeds; "
    if ahead == n:
        verdict, tail = "ahead", f"{a} ahead in {every}."
    elif behind == n:
        verdict, tail = "behind", f"{a} behind in {every}."
    else:
        verdict = "mixed"
        tail = (f"{a} ahead in {ahead} of {n}, behind in {behind}: within the noise, "
                "not a finding.")
    return Comparison(a, b, metric, tuple(diffs.tolist()), verdict, numbers + tail)


def verdict(comparison: Comparison, expected: str) -> str:
    """Whether a comparison bears out an expectation stated before the run, in words.

    ``expected`` is what the hypothesis predicts for ``comparison.a`` against
    ``comparison.b``: "ahead", "behind", or "mixed" (no difference beyond the noise).

    - one seed: "untested (one seed)";
    - the comparison's verdict is the expected one: "supported";
    - the opposite of an expected direction, or a direction where none was expected:
      "contradicted";
    - a mixed result where a direction was expected: "not shown".

    Examples
    --------
    >>> verdict(compare("BSM", [0.5, 0.6], "CE", [0.4, 0.5], metric="BAcc"), "ahead")
    'supported: BSM ahead of CE in both seeds (+0.100 ± 0.000).'
    """
    check_param("verdict", "expected", expected, Options(("ahead", "behind", "mixed")))
    c = comparison
    n = len(c.diffs)
    if c.verdict == "one seed":
        return f"untested (one seed): {c.a} {_signed(c.diffs[0], 3)} against {c.b}."
    mean, spread = mean_spread(c.diffs)
    numbers = f"({_signed(mean, 3)} ± {spread:.3f})"
    every = "both seeds" if n == 2 else f"all {n} seeds"
    if c.verdict == "mixed":
        observed = f"{c.a} ahead of {c.b} in {c.ahead_in} of {n} seeds {numbers}"
    else:
        relation = "ahead of" if c.verdict == "ahead" else "behind"
        observed = f"{c.a} {relation} {c.b} in {every} {numbers}"
    if c.verdict == expected:
        word = "supported"
    elif c.verdict == "mixed":
        word = "not shown"
    else:
        word = "contradicted"
    return f"{word}: {observed}."


def gap_closed(
    low: str,
    low_values: Sequence[float],
    mid: str,
    mid_values: Sequence[float],
    high: str,
    high_values: Sequence[float],
    *,
    digits: int = 3,
) -> str:
    """How much of the gap from ``low`` to ``high`` the method ``mid`` closes, in words.

    The share is ``(m - l) / (h - l)`` on the means over seeds. It is stated only when its
    premise holds: ``high`` ahead of ``low`` in every seed (or, with one seed, in the one run,
    said as such), and ``mid`` strictly between the two; otherwise the sentence says which part
    of the premise fails.

    Examples
    --------
    >>> gap_closed("local", [0.2], "FedAvg", [0.3], "pooled", [0.4])
    'FedAvg closes 50% of the gap from local (0.200) to pooled (0.400); one seed: no spread.'
    >>> gap_closed("local", [0.4], "FedAvg", [0.3], "pooled", [0.2])[:60]
    'pooled (0.200) is not above local (0.400): there is no gap f'
    """
    owner = "gap_closed"
    check_param(owner, "digits", digits, Interval(int, 0, 10))
    values = {name: _values(owner, f"{name} values", v)
              for name, v in ((low, low_values), (mid, mid_values), (high, high_values))}
    sizes = {v.size for v in values.values()}
    if len(sizes) != 1:
        raise ValueError(f"{owner}: every method needs one value per seed, got sizes "
                         f"{[v.size for v in values.values()]}.")
    n = sizes.pop()
    l_, m_, h_ = (float(values[name].mean()) for name in (low, mid, high))

    def show(name: str, value: float) -> str:
        return f"{name} ({value:.{digits}f})"

    one_seed = "; one seed: no spread" if n == 1 else f", means over {n} seeds"
    if h_ <= l_:
        return (f"{show(high, h_)} is not above {show(low, l_)}: there is no gap for {mid} "
                f"to close{one_seed}.")
    if n > 1 and not (values[high] > values[low]).all():
        return (f"{high} is above {low} on average ({h_:.{digits}f} vs {l_:.{digits}f}) but "
                f"not in every seed, so the gap is within the noise and no share of it is "
                f"computed for {mid}.")
    if m_ <= l_:
        return f"{show(mid, m_)} does not improve on {show(low, l_)}{one_seed}."
    if m_ >= h_:
        return (f"{show(mid, m_)} reaches {show(high, h_)}: it closes the whole gap from "
                f"{show(low, l_)}{one_seed}.")
    share = (m_ - l_) / (h_ - l_)
    return (f"{mid} closes {share:.0%} of the gap from {show(low, l_)} to "
            f"{show(high, h_)}{one_seed}.")


def leader(results: Mapping[str, Sequence[float]], *, metric: str, digits: int = 3) -> str:
    """Which method leads on ``metric``, said only as strongly as the seeds allow.

    ``results`` maps each method to its per-seed values (same seed order for all). With one
    seed the sentence names the highest value and says that one seed gives no ranking. With
    more, a method *leads* only if it is ahead of every other method in every seed; otherwise
    the sentence names the highest mean and the methods it is not ahead of in every seed.

    Examples
    --------
    >>> leader({"A": [0.5, 0.6], "B": [0.4, 0.5]}, metric="BAcc")
    'BAcc: A leads, ahead of every other method in both seeds (A 0.550 ± 0.071).'
    >>> leader({"A": [0.5], "B": [0.4]}, metric="BAcc")
    'BAcc: highest in the one seed run: A (0.500); one seed: no spread, no ranking.'
    """
    owner = "leader"
    if not results:
        raise ValueError(f"{owner}: 'results' must name at least one method, got none.")
    values = {name: _values(owner, f"results[{name!r}]", v) for name, v in results.items()}
    sizes = {v.size for v in values.values()}
    if len(sizes) != 1:
        raise ValueError(f"{owner}: every method needs one value per seed, got sizes "
                         f"{[v.size for v in values.values()]}.")
    n = sizes.pop()
    top = max(values, key=lambda name: values[name].mean())
    if n == 1:
        return (f"{metric}: highest in the one seed run: {top} "
                f"({values[top][0]:.{digits}f}); one seed: no spread, no ranking.")
    shown = f"{top} {format_mean_spread(values[top], digits)}"
    if len(values) == 1:
        return f"{metric}: only {shown}."
    close = [name for name in values if name != top and not (values[top] > values[name]).all()]
    if not close:
        every = "both seeds" if n == 2 else f"all {n} seeds"
        return f"{metric}: {top} leads, ahead of every other method in {every} ({shown})."
    return (f"{metric}: highest mean {shown}, but not ahead in every seed of "
            f"{', '.join(close)}: no single leader.")


def trend(values: Sequence[float]) -> str:
    """``"rises"``, ``"falls"``, ``"stays the same"`` or ``"goes up and down"`` along a sequence.

    >>> trend([1.17, 1.04, 0.97])
    'falls'
    """
    array = _values("trend", "values", values)
    steps = np.diff(array)
    if array.size < 2 or (steps == 0).all():
        return "stays the same"
    if (steps >= 0).all():
        return "rises"
    if (steps <= 0).all():
        return "falls"
    return "goes up and down"


def alignment(cosine: float) -> str:
    """Words for a cosine similarity between two updates.

    ``>= 0.9`` "nearly parallel", ``>= 0.5`` "aligned", ``> 0.2`` "weakly aligned",
    ``>= -0.2`` "nearly orthogonal", else "opposed".

    >>> alignment(0.15)
    'nearly orthogonal'
    """
    value = float(cosine)
    if not math.isfinite(value) or not -1.0 - 1e-6 <= value <= 1.0 + 1e-6:
        raise ValueError(f"alignment: 'cosine' must be a number in [-1, 1], got {cosine!r}.")
    if value >= 0.9:
        return "nearly parallel"
    if value >= 0.5:
        return "aligned"
    if value > 0.2:
        return "weakly aligned"
    if value >= -0.2:
        return "nearly orthogonal"
    return "opposed"


def wrap(text: str, width: int = PAGE_WIDTH, indent: str = "") -> str:
    """``text`` wrapped to ``width`` characters; continuation lines indented by two spaces."""
    check_param("wrap", "width", width, Interval(int, 20, None))
    return textwrap.fill(text, width=width, initial_indent=indent,
                         subsequent_indent=indent + "  ", break_on_hyphens=False)


def say(*sentences: str, width: int = PAGE_WIDTH) -> None:
    """Print each sentence wrapped to the page width (one paragraph each)."""
    for sentence in sentences:
        print(wrap(sentence, width))
