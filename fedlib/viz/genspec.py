"""Generalization versus specialization as plotly figures.

The FCA paper scores every federated model twice (Wicaksana, Yan, Cheng, arXiv:2305.00738,
2023): **generalization**, the server's model on the pooled test set of all clients, and
**specialization**, each client's own model on that client's own test split, averaged over
clients without weights (:mod:`fedlib.evaluation`). A method is then a point in the plane of
the two scores.

* :func:`genspec_figure`: one point per method (mean over seeds, with the standard deviation
  over seeds as error bars when there are several seeds). A dropdown switches to one method's
  clients: one point per client (mean over seeds), e.g. the client's own model on the pooled
  test set against the same model on the client's own test split, with the mean over the
  clients. Every view is stored in the figure, so the dropdown also works in the static book.
* :func:`two_head_figure`: the two-head model of FCA drawn with plotly shapes: which parts
  cross the wire, which stay at the hospital, which losses train what, and which head serves
  which of the two scores.

Both figures size themselves to the page (``autosize``, no fixed width).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from fedlib._validation import InstanceOf, Interval, check_param

__all__ = ["genspec_figure", "genspec_summary", "two_head_figure"]

_OWNER = "genspec_figure"
GEN_TITLE = "generalization: server model, pooled test set (BAcc)"
SPEC_TITLE = "specialization: own models, own test splits (BAcc, client mean)"
CLIENT_X_TITLE = "client's own model, pooled test set (BAcc)"
CLIENT_Y_TITLE = "client's own model, its own test split (BAcc)"
PALETTE = tuple(qualitative.D3)
MAX_LABELLED_CLIENTS = 6
"""A per-client view writes the clients' names next to their points up to this many clients;
beyond, the names would overlap and are shown on hover only."""
_PAD = 0.03


def _check_table(owner: str, name: str, table, columns: Sequence[str]) -> pd.DataFrame:
    check_param(owner, name, table, InstanceOf(pd.DataFrame, description="a pandas DataFrame"))
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{owner}: {name!r} must have the columns {list(columns)}, missing {missing}; "
            f"it has {list(table.columns)}."
        )
    if table.empty:
        raise ValueError(f"{owner}: {name!r} must hold at least one row, got none.")
    return table


def _check_scores(owner: str, name: str, table: pd.DataFrame, columns: Sequence[str]) -> None:
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            bad = table[column][~np.isfinite(values)].tolist()
            raise ValueError(
                f"{owner}: {name!r} column {column!r} must hold finite numbers, got {bad[:3]}."
            )


def genspec_summary(
    table: pd.DataFrame, by: str | Sequence[str], x: str = "gen", y: str = "spec"
) -> pd.DataFrame:
    """Mean, standard deviation (``ddof=1``; NaN for one row) and count of ``x`` and ``y``.

    One output row per group of ``by`` (in the order of first appearance), with the columns
    ``x_mean, x_std, y_mean, y_std, n``: the numbers :func:`genspec_figure` draws.

    >>> t = pd.DataFrame({"method": ["A", "A", "B"], "gen": [0.2, 0.4, 0.5],
    ...                   "spec": [0.6, 0.6, 0.7]})
    >>> genspec_summary(t, "method").round(3).to_dict("index")["A"]
    {'x_mean': 0.3, 'x_std': 0.141, 'y_mean': 0.6, 'y_std': 0.0, 'n': 2.0}
    """
    keys = [by] if isinstance(by, str) else list(by)
    grouped = table.groupby(keys, sort=False)
    return pd.DataFrame({
        "x_mean": grouped[x].mean(), "x_std": grouped[x].std(ddof=1),
        "y_mean": grouped[y].mean(), "y_std": grouped[y].std(ddof=1),
        "n": grouped[x].count().astype(float),
    })


def _error(std: pd.Series) -> dict | None:
    values = std.to_numpy(dtype=np.float64)
    if np.isnan(values).all():
        return None
    return {"type": "data", "array": np.nan_to_num(values).tolist(), "thickness": 1.2}


def _spread_text(n: float) -> str:
    return "one seed: no spread" if n == 1 else f"mean ± std over {int(n)} seeds"


def _hover(label: str, row: pd.Series, x_name: str, y_name: str) -> str:
    def part(mean: float, std: float) -> str:
        return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}"

    return (f"<b>{label}</b><br>{x_name}: {part(row.x_mean, row.x_std)}<br>"
            f"{y_name}: {part(row.y_mean, row.y_std)}<br>{_spread_text(row.n)}")


def genspec_figure(
    runs: pd.DataFrame,
    clients: pd.DataFrame | None = None,
    *,
    x: str = "gen",
    y: str = "spec",
    method: str = "method",
    client: str = "client",
    title: str | None = None,
    x_title: str = GEN_TITLE,
    y_title: str = SPEC_TITLE,
    client_x_title: str = CLIENT_X_TITLE,
    client_y_title: str = CLIENT_Y_TITLE,
    colors: Mapping[str, str] | None = None,
    height: int = 520,
) -> go.Figure:
    """Generalization against specialization, per method, with a per-client view per method.

    Parameters
    ----------
    runs : DataFrame
        One row per (method, seed): columns ``method``, ``x`` and ``y`` (e.g. the
        ``gen_balanced_accuracy`` and ``spec_balanced_accuracy`` of
        :func:`fedlib.evaluation.evaluate_run`, renamed). Each method is drawn at its mean over
        its rows, with the standard deviation over the rows as error bars (none for one seed).
    clients : DataFrame, optional
        One row per (method, seed, client): columns ``method``, ``client``, ``x`` and ``y``,
        e.g. a client's own model on the pooled test set and on its own test split
        (:func:`fedlib.evaluation.specialization_table`). Every method listed here gets a view
        in the dropdown: one point per client (mean over its rows) and the mean over the
        clients. Its methods must appear in ``runs``. Up to ``MAX_LABELLED_CLIENTS`` clients
        are named next to their points; every point names its client on hover.
    x, y, method, client : str
        Column names.
    title : str, optional
        Title of the all-methods view (each client view has its own).
    x_title, y_title : str
        Axis titles of the all-methods view.
    client_x_title, client_y_title : str
        Axis titles of the per-client views.
    colors : mapping of method to colour, optional
        Default: plotly's D3 palette in the order the methods appear.
    height : int, default 520
        Pixels; the width follows the page (``autosize``).

    Returns
    -------
    plotly.graph_objects.Figure
        Both axes share one range, fixed over all views, with the diagonal ``y = x`` dashed:
        above it a model does better on its own patients than on everybody's.

    Examples
    --------
    >>> runs = pd.DataFrame({"method": ["A", "A", "B", "B"], "gen": [0.4, 0.5, 0.3, 0.3],
    ...                      "spec": [0.5, 0.6, 0.7, 0.8]})
    >>> fig = genspec_figure(runs)
    >>> [trace.name for trace in fig.data]
    ['A', 'B']
    """
    owner = _OWNER
    _check_table(owner, "runs", runs, [method, x, y])
    _check_scores(owner, "runs", runs, [x, y])
    if title is not None:
        check_param(owner, "title", title, InstanceOf(str))
    check_param(owner, "height", height, Interval(int, 100, None))
    summary = genspec_summary(runs, method, x, y)
    methods = [str(m) for m in summary.index]
    per_client: dict[str, pd.DataFrame] = {}
    if clients is not None:
        _check_table(owner, "clients", clients, [method, client, x, y])
        _check_scores(owner, "clients", clients, [x, y])
        unknown = sorted({str(m) for m in clients[method]} - set(methods))
        if unknown:
            raise ValueError(
                f"{owner}: 'clients' names methods that 'runs' does not have: {unknown}."
            )
        for name, part in clients.groupby(method, sort=False):
            per_client[str(name)] = genspec_summary(part, client, x, y)
    palette = dict(zip(methods, (PALETTE[i % len(PALETTE)] for i in range(len(methods))),
                       strict=True))
    if colors is not None:
        check_param(owner, "colors", colors, InstanceOf(Mapping, description="a mapping"))
        palette.update({str(k): str(v) for k, v in colors.items()})

    fig = go.Figure()
    views: list[str] = []  # which view each trace belongs to
    for name, row in zip(methods, summary.itertuples(), strict=True):
        single = summary.loc[[row.Index]]
        fig.add_scatter(
            x=[row.x_mean], y=[row.y_mean], mode="markers", name=name,
            marker={"size": 12, "color": palette[name], "line": {"width": 1, "color": "white"}},
            error_x=_error(single["x_std"]), error_y=_error(single["y_std"]),
            hovertext=[_hover(name, row, "generalization", "specialization")],
            hoverinfo="text",
        )
        views.append("all")
    for name, table in per_client.items():
        labelled = len(table) <= MAX_LABELLED_CLIENTS
        fig.add_scatter(
            x=table["x_mean"].tolist(), y=table["y_mean"].tolist(),
            mode="markers+text" if labelled else "markers",
            name=f"{name}: clients", text=[str(c) for c in table.index] if labelled else None,
            textposition="top center", textfont={"size": 10},
            marker={"size": 10, "color": palette[name], "symbol": "circle-open",
                    "line": {"width": 2}},
            error_x=_error(table["x_std"]), error_y=_error(table["y_std"]),
            hovertext=[_hover(f"{name}, {c}", r, "pooled", "own")
                       for c, r in zip(table.index, table.itertuples(), strict=True)],
            hoverinfo="text", visible=False,
        )
        views.append(name)
        fig.add_scatter(
            x=[float(table["x_mean"].mean())], y=[float(table["y_mean"].mean())],
            mode="markers", name=f"{name}: mean over clients", visible=False,
            marker={"size": 15, "color": palette[name], "symbol": "x"},
            hovertext=[f"<b>{name}</b>, mean over {len(table)} clients<br>"
                       f"pooled {table['x_mean'].mean():.3f}<br>"
                       f"own {table['y_mean'].mean():.3f}"],
            hoverinfo="text",
        )
        views.append(name)

    low, high = _shared_range(summary, per_client.values())
    fig.add_shape(type="line", x0=low, y0=low, x1=high, y1=high, layer="below",
                  line={"color": "#999", "dash": "dash", "width": 1})
    all_title = title or "Generalization vs specialization"
    spread = _spread_text(float(summary["n"].max()))
    axis = {"range": [low, high], "zeroline": False}
    fig.update_layout(
        autosize=True, height=height, title={"text": all_title},
        xaxis={**axis, "title": {"text": x_title}},
        yaxis={**axis, "title": {"text": y_title}},
        legend={"title": {"text": spread}, "orientation": "h", "yanchor": "top", "y": -0.2,
                "x": 0.0, "xanchor": "left"},
        margin={"t": 90, "b": 40},
        hovermode="closest",
    )
    if per_client:
        buttons = [_button("All methods", views, "all", all_title, x_title, y_title)]
        buttons += [
            _button(f"{name}: per client", views, name,
                    f"{name}: each client's own model ({_spread_text(table['n'].max())})",
                    client_x_title, client_y_title)
            for name, table in per_client.items()
        ]
        fig.update_layout(updatemenus=[{
            "type": "dropdown", "buttons": buttons, "active": 0, "showactive": True,
            "x": 0.0, "xanchor": "left", "y": 1.0, "yanchor": "bottom",
            "pad": {"b": 6}, "direction": "down",
        }])
    return fig


def _shared_range(summary: pd.DataFrame, tables) -> tuple[float, float]:
    """One range for both axes: every point with its error bar, padded; cut to [0, 1] when
    every mean lies in it (scores: an error bar past 0 or 1 is cut at the edge)."""
    lows, highs, means = [], [], []
    for table in (summary, *tables):
        for axis in ("x", "y"):
            mean = table[f"{axis}_mean"].to_numpy(dtype=np.float64)
            std = np.nan_to_num(table[f"{axis}_std"].to_numpy(dtype=np.float64))
            lows.append((mean - std).min())
            highs.append((mean + std).max())
            means.append(mean)
    low, high = float(min(lows)) - _PAD, float(max(highs)) + _PAD
    every = np.concatenate(means)
    if every.min() >= 0 and every.max() <= 1:
        low, high = max(low, 0.0), min(high, 1.0)
    return round(low, 3), round(high, 3)


def _button(label: str, views: list[str], view: str, title: str, x_title: str,
            y_title: str) -> dict:
    return {
        "label": label, "method": "update",
        "args": [{"visible": [v == view for v in views]},
                 {"title.text": title, "xaxis.title.text": x_title,
                  "yaxis.title.text": y_title}],
    }


# --------------------------------------------------------------------------- the model drawn
SHARED_COLOUR = "#3b6ea5"
LOCAL_COLOUR = "#d9822b"


def two_head_figure(
    lambda_fed: float = 1.0,
    lambda_per: float = 3.0,
    lambda_cons: float = 1.0,
    *,
    height: int = 380,
) -> go.Figure:
    r"""FCA's two-head model, drawn: shared body, federated head, personalized head, losses.

    Blue parts cross the wire and are averaged by the server (body :math:`\phi`, federated head
    :math:`W_{fed}`); the orange part (personalized head :math:`W_{per}`) never leaves the
    hospital. The local loss is
    :math:`\lambda_1 L_{BSM}(z_{fed}) + \lambda_2 L_{BSM}(z_{per}) + \lambda_c
    \mathrm{KL}(\mathrm{sg}[p_{per}] \| p_{fed})`; the weights are written on the figure.

    Parameters
    ----------
    lambda_fed, lambda_per, lambda_cons : float >= 0, default 1, 3, 1
        :math:`\lambda_1, \lambda_2, \lambda_c` as printed on the figure.
    height : int, default 380
        Pixels; the width follows the page.
    """
    owner = "two_head_figure"
    weight = Interval(float, 0, None, closed="left")
    for name, value in (("lambda_fed", lambda_fed), ("lambda_per", lambda_per),
                        ("lambda_cons", lambda_cons)):
        check_param(owner, name, value, weight)
    check_param(owner, "height", height, Interval(int, 100, None))

    fig = go.Figure()
    boxes = [  # (x0, x1, y0, y1, colour, text)
        (0.0, 1.5, 2.4, 3.6, "#777", "image x"),
        (2.2, 4.4, 2.2, 3.8, SHARED_COLOUR, "body φ<br>(averaged)"),
        (5.4, 7.4, 4.0, 5.4, SHARED_COLOUR, "head W<sub>fed</sub><br>(averaged)"),
        (5.4, 7.4, 0.6, 2.0, LOCAL_COLOUR, "head W<sub>per</sub><br>(stays)"),
    ]
    for x0, x1, y0, y1, colour, text in boxes:
        fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, line={"color": colour, "width": 2},
                      fillcolor=colour, opacity=0.15, layer="below")
        fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=text, showarrow=False,
                           font={"size": 11})
    arrows = [  # (from x, from y, to x, to y, colour)
        (1.5, 3.0, 2.2, 3.0, "#555"),
        (4.4, 3.2, 5.4, 4.5, "#555"),
        (4.4, 2.8, 5.4, 1.5, "#555"),
        (7.4, 4.7, 8.1, 4.7, "#555"),
        (7.4, 1.3, 8.1, 1.3, "#555"),
        # the anchor: the personalized prediction (stop-gradient) pulls the federated one
        (7.9, 2.0, 7.9, 4.0, LOCAL_COLOUR),
    ]
    for x0, y0, x1, y1, colour in arrows:
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y",
                           text="", showarrow=True, arrowhead=2, arrowwidth=1.5,
                           arrowcolor=colour)
    fig.add_annotation(x=4.9, y=3.0, text="h", showarrow=False, font={"size": 12})
    labels = [  # (x, y, text), left-aligned; short lines, so they fit a phone's width
        (8.15, 4.7, f"z<sub>fed</sub>: {lambda_fed:g} · BSM<br>server model<br>"
                    "→ <b>generalization</b>"),
        (8.15, 1.3, f"z<sub>per</sub>: {lambda_per:g} · BSM<br>hospital's model<br>"
                    "→ <b>specialization</b>"),
        (8.15, 3.0, f"anchor: {lambda_cons:g} · KL<br>(sg[p<sub>per</sub>] ‖ p<sub>fed</sub>)"
                    "<br>no gradient to W<sub>per</sub>"),
        (0.0, 6.1, f"<span style='color:{SHARED_COLOUR}'>■</span> sent to the server and "
                   f"averaged<br><span style='color:{LOCAL_COLOUR}'>■</span> never leaves the "
                   "hospital"),
    ]
    for x, y, text in labels:
        fig.add_annotation(x=x, y=y, text=text, xanchor="left", showarrow=False, align="left",
                           font={"size": 10})
    hidden = {"visible": False, "fixedrange": True}
    fig.update_layout(
        autosize=True, height=height, title={"text": "FCA: one body, two heads"},
        xaxis={**hidden, "range": [-0.1, 12.5]}, yaxis={**hidden, "range": [0.2, 6.7]},
        plot_bgcolor="white", showlegend=False, margin={"l": 10, "r": 10, "t": 60, "b": 10},
        hovermode=False,
    )
    return fig
