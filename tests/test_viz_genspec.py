"""The generalization/specialization figures: the numbers drawn, the views, the checks."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import pytest

from fedlib.viz import genspec_figure, two_head_figure
from fedlib.viz.genspec import genspec_summary


def runs_table() -> pd.DataFrame:
    # A: gen (0.4, 0.6) -> mean 0.5, std sqrt(0.02) = 0.141421; spec (0.5, 0.7) -> 0.6, 0.141421
    # B: gen (0.3, 0.3) -> 0.3, std 0; spec (0.8, 0.9) -> 0.85, 0.070711
    return pd.DataFrame({
        "method": ["A", "A", "B", "B"], "seed": [0, 1, 0, 1],
        "gen": [0.4, 0.6, 0.3, 0.3], "spec": [0.5, 0.7, 0.8, 0.9],
    })


def clients_table() -> pd.DataFrame:
    # A's clients over two seeds: s1 (0.2, 0.4) -> 0.3 / (0.6, 0.8) -> 0.7; s2 (0.5, 0.5)
    return pd.DataFrame({
        "method": ["A"] * 4, "seed": [0, 0, 1, 1], "client": ["s1", "s2", "s1", "s2"],
        "gen": [0.2, 0.5, 0.4, 0.5], "spec": [0.6, 0.5, 0.8, 0.5],
    })


def test_summary_is_mean_and_sample_std_per_group():
    summary = genspec_summary(runs_table(), "method")
    assert list(summary.index) == ["A", "B"]
    assert summary.loc["A", "x_mean"] == pytest.approx(0.5)
    assert summary.loc["A", "x_std"] == pytest.approx(math.sqrt(0.02))
    assert summary.loc["B", "x_std"] == pytest.approx(0.0)
    assert summary.loc["B", "y_mean"] == pytest.approx(0.85)
    assert summary.loc["B", "y_std"] == pytest.approx(math.sqrt(0.005))
    assert summary["n"].tolist() == [2.0, 2.0]


def test_one_point_per_method_at_its_mean_with_std_bars():
    fig = genspec_figure(runs_table())
    assert [t.name for t in fig.data] == ["A", "B"]
    a, b = fig.data
    assert a.x[0] == pytest.approx(0.5) and a.y[0] == pytest.approx(0.6)
    assert a.error_x.array[0] == pytest.approx(math.sqrt(0.02))
    assert b.error_y.array[0] == pytest.approx(math.sqrt(0.005))
    assert fig.layout.legend.title.text == "mean ± std over 2 seeds"
    assert not fig.layout.updatemenus  # no client table: no dropdown


def test_one_seed_draws_no_error_bars_and_says_so():
    fig = genspec_figure(runs_table().query("seed == 0"))
    assert all(t.error_x.array is None and t.error_y.array is None for t in fig.data)
    assert fig.layout.legend.title.text == "one seed: no spread"


def test_client_view_points_visibility_and_axis_titles():
    fig = genspec_figure(runs_table(), clients_table(), client_x_title="pooled",
                         client_y_title="own")
    names = [t.name for t in fig.data]
    assert names == ["A", "B", "A: clients", "A: mean over clients"]
    clients, mean = fig.data[2], fig.data[3]
    assert list(clients.text) == ["s1", "s2"]
    assert list(clients.x) == pytest.approx([0.3, 0.5])
    assert list(clients.y) == pytest.approx([0.7, 0.5])
    assert clients.error_y.array[0] == pytest.approx(math.sqrt(0.02))
    assert mean.x[0] == pytest.approx(0.4) and mean.y[0] == pytest.approx(0.6)
    assert [t.visible for t in fig.data] == [None, None, False, False]  # all-methods view first
    menu = fig.layout.updatemenus[0]
    assert [b.label for b in menu.buttons] == ["All methods", "A: per client"]
    visible, layout = menu.buttons[1].args
    assert visible["visible"] == [False, False, True, True]
    assert layout["xaxis.title.text"] == "pooled" and layout["yaxis.title.text"] == "own"
    assert menu.buttons[0].args[0]["visible"] == [True, True, False, False]


def test_axes_share_one_range_that_holds_every_bar_and_the_diagonal():
    fig = genspec_figure(runs_table(), clients_table())
    low, high = fig.layout.xaxis.range
    assert tuple(fig.layout.yaxis.range) == (low, high)
    # lowest value 0.2 (client s1 mean 0.3 - std 0.141) -> 0.159 - 0.03; highest 0.85 + 0.071
    assert low == pytest.approx(round(0.3 - math.sqrt(0.02) - 0.03, 3))
    assert high == pytest.approx(round(0.85 + math.sqrt(0.005) + 0.03, 3))
    (diagonal,) = fig.layout.shapes
    assert (diagonal.x0, diagonal.y0, diagonal.x1, diagonal.y1) == (low, low, high, high)


def test_range_stays_in_the_unit_square_for_scores():
    runs = pd.DataFrame({"method": ["A"], "gen": [0.0], "spec": [1.0]})
    assert tuple(genspec_figure(runs).layout.xaxis.range) == (0.0, 1.0)


def test_range_is_cut_at_zero_when_a_bar_crosses_it():
    runs = pd.DataFrame({"method": ["A", "A"], "gen": [0.0, 0.3], "spec": [0.5, 0.6]})
    low, high = genspec_figure(runs).layout.xaxis.range
    assert low == 0.0  # mean 0.15 - std 0.212 < 0: the bar is cut, the range is not negative
    assert high == pytest.approx(round(0.55 + math.sqrt(0.005) + 0.03, 3))


def test_many_clients_are_named_on_hover_only():
    clients = pd.DataFrame({"method": "A", "client": [f"c{i}" for i in range(7)],
                            "gen": 0.3, "spec": 0.4})
    fig = genspec_figure(runs_table(), clients)
    assert fig.data[2].mode == "markers" and fig.data[2].text is None
    assert "c6" in fig.data[2].hovertext[6]
    few = genspec_figure(runs_table(), clients_table())
    assert few.data[2].mode == "markers+text"


def test_figure_follows_the_page_width():
    for fig in (genspec_figure(runs_table(), clients_table()), two_head_figure()):
        assert fig.layout.autosize is True
        assert fig.layout.width is None


def test_colours_can_be_chosen():
    fig = genspec_figure(runs_table(), clients_table(), colors={"A": "#123456"})
    assert fig.data[0].marker.color == "#123456"
    assert fig.data[2].marker.color == "#123456"


def test_runs_must_be_a_dataframe():
    with pytest.raises(TypeError, match="genspec_figure: 'runs' must be a pandas DataFrame"):
        genspec_figure({"method": ["A"], "gen": [0.1], "spec": [0.2]})


def test_runs_must_have_the_columns():
    with pytest.raises(ValueError, match=r"'runs' must have the columns .*missing \['spec'\]"):
        genspec_figure(runs_table().drop(columns="spec"))


def test_runs_must_not_be_empty():
    with pytest.raises(ValueError, match="'runs' must hold at least one row"):
        genspec_figure(runs_table().iloc[:0])


def test_scores_must_be_finite():
    runs = runs_table()
    runs.loc[1, "gen"] = float("nan")
    with pytest.raises(ValueError, match="'runs' column 'gen' must hold finite numbers"):
        genspec_figure(runs)


def test_clients_must_have_a_client_column():
    with pytest.raises(ValueError, match=r"'clients' must have the columns .*\['client'\]"):
        genspec_figure(runs_table(), clients_table().drop(columns="client"))


def test_clients_must_name_known_methods():
    clients = clients_table().assign(method="C")
    with pytest.raises(ValueError, match=r"'clients' names methods that 'runs' does not have: "
                                         r"\['C'\]"):
        genspec_figure(runs_table(), clients)


def test_height_is_checked():
    with pytest.raises(ValueError, match="genspec_figure: 'height' must be an int >= 100"):
        genspec_figure(runs_table(), height=50)


def test_title_is_checked():
    with pytest.raises(TypeError, match="genspec_figure: 'title' must be"):
        genspec_figure(runs_table(), title=3)


def test_colors_must_be_a_mapping():
    with pytest.raises(TypeError, match="genspec_figure: 'colors' must be a mapping"):
        genspec_figure(runs_table(), colors=["red"])


def test_two_head_figure_writes_the_weights_and_the_roles():
    fig = two_head_figure(1.0, 3.0, 0.5)
    assert isinstance(fig, go.Figure)
    texts = " ".join(a.text for a in fig.layout.annotations)
    for expected in ("head W<sub>fed</sub>", "head W<sub>per</sub>", "body φ",
                     "1 · BSM", "3 · BSM", "0.5 · KL", "generalization", "specialization"):
        assert expected in texts
    assert len(fig.layout.shapes) == 4  # image, body, two heads


@pytest.mark.parametrize("name", ["lambda_fed", "lambda_per", "lambda_cons"])
def test_two_head_figure_weights_are_checked(name):
    with pytest.raises(ValueError, match=f"two_head_figure: '{name}' must be a float >= 0"):
        two_head_figure(**{name: -1.0})
