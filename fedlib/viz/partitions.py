"""Plotly figures of how data is spread over clients.

* :func:`client_class_heatmap`: clients x classes counts as a heatmap with the numbers written in;
* :func:`client_class_bars`: one stacked bar per client, a segment per class;
* :func:`partition_slider_figure`: a heatmap whose slider steps through precomputed
  partitions (Dirichlet ``alpha`` x long-tail imbalance factor ``IF``). The states are computed
  in Python once and stored in the figure, so the slider also works in the static HTML book.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from fedlib._validation import Interval, check_param

__all__ = ["client_class_bars", "client_class_heatmap", "partition_slider_figure"]

_HEIGHT_PER_CLIENT = 26
_BASE_HEIGHT = 180


def _as_counts(owner: str, counts) -> np.ndarray:
    if hasattr(counts, "to_numpy"):  # pandas DataFrame from partition_stats
        counts = counts.to_numpy()
    table = np.asarray(counts)
    if table.ndim != 2:
        raise ValueError(f"{owner}: 'counts' must be a 2-D (clients x classes) table, got "
                         f"shape {table.shape}.")
    if table.size and (not np.issubdtype(table.dtype, np.number) or (table < 0).any()):
        raise ValueError(f"{owner}: 'counts' must hold numbers >= 0.")
    return table


def _names(owner: str, name: str, given, default_prefix: str, n: int, frame=None, axis=None):
    if given is None and frame is not None and hasattr(frame, axis):
        given = [str(v) for v in getattr(frame, axis)]
    if given is None:
        return [f"{default_prefix} {i}" for i in range(n)]
    given = [str(v) for v in given]
    if len(given) != n:
        raise ValueError(f"{owner}: {name!r} has {len(given)} names for {n} entries.")
    return given


def _normalise(table: np.ndarray, normalize: bool) -> np.ndarray:
    if not normalize:
        return table
    totals = table.sum(axis=1, keepdims=True)
    return np.divide(table, totals, out=np.zeros(table.shape, dtype=float), where=totals > 0)


def client_class_heatmap(
    counts,
    class_names: Sequence[str] | None = None,
    client_names: Sequence[str] | None = None,
    *,
    normalize: bool = False,
    title: str | None = None,
    colorscale: str = "Blues",
) -> go.Figure:
    """Clients (rows) x classes (columns) as a heatmap, with each cell's count written in.

    Parameters
    ----------
    counts : array (K, C) or DataFrame (e.g. :func:`fedlib.data.partitions.partition_stats`
        or ``FederatedDataset.class_counts()``)
    class_names, client_names : sequences of str, optional
        Default: the DataFrame's labels, else ``"class c"`` / ``"client k"``.
    normalize : bool, default False
        Colour by each client's class shares (rows sum to 1); the text still shows counts.
    title : str, optional
    colorscale : str, default "Blues"
    """
    owner = "client_class_heatmap"
    table = _as_counts(owner, counts)
    k, c = table.shape
    classes = _names(owner, "class_names", class_names, "class", c, counts, "columns")
    clients = _names(owner, "client_names", client_names, "client", k, counts, "index")
    z = _normalise(table, normalize)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=classes,
            y=clients,
            text=table,
            texttemplate="%{text}",
            colorscale=colorscale,
            colorbar={"title": "share" if normalize else "images"},
            hovertemplate="%{y}<br>%{x}: %{text} images<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=title,
        xaxis_title="class",
        yaxis_title="client",
        height=_BASE_HEIGHT + _HEIGHT_PER_CLIENT * k,
        margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
    )
    return fig


def client_class_bars(
    counts,
    class_names: Sequence[str] | None = None,
    client_names: Sequence[str] | None = None,
    *,
    normalize: bool = False,
    title: str | None = None,
) -> go.Figure:
    """One stacked bar per client; segment ``c`` is the client's count (or share) of class c."""
    owner = "client_class_bars"
    table = _as_counts(owner, counts)
    k, c = table.shape
    classes = _names(owner, "class_names", class_names, "class", c, counts, "columns")
    clients = _names(owner, "client_names", client_names, "client", k, counts, "index")
    values = _normalise(table, normalize)
    fig = go.Figure(
        [
            go.Bar(
                name=classes[j],
                x=clients,
                y=values[:, j],
                customdata=table[:, j],
                hovertemplate=f"%{{x}}<br>{classes[j]}: %{{customdata}} images<extra></extra>",
            )
            for j in range(c)
        ]
    )
    fig.update_layout(
        barmode="stack",
        title=title,
        xaxis_title="client",
        yaxis_title="share of images" if normalize else "images",
        legend_title="class",
        height=380,
        margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
    )
    return fig


def partition_slider_figure(
    labels,
    alphas: Sequence[float],
    imbalance_factors: Sequence[float] = (1.0,),
    *,
    num_clients: int = 10,
    min_size: int = 0,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    title: str = "Dirichlet label skew",
) -> go.Figure:
    """A heatmap of client x class counts with a slider over (imbalance factor, alpha).

    For every pair ``(IF, alpha)`` the labels are first subsampled to the long tail
    ``n_c = floor(n_max * IF^(-c/(C-1)))`` (skipped for ``IF = 1``) and then split with
    :func:`fedlib.data.partitions.dirichlet_partition` (same ``seed`` for every state, so the
    slider shows the effect of the parameters, not of a new draw). One heatmap trace is restyled
    by each slider step; the figure stores ``len(alphas) * len(imbalance_factors)`` small count
    tables, nothing else. The colour range is shared by all states.

    Parameters
    ----------
    labels : 1-D int array-like
        A pooled label vector (e.g. a balanced synthetic set).
    alphas : sequence of float > 0
    imbalance_factors : sequence of float >= 1, default (1,)
    num_clients : int, default 10
    min_size : int, default 0
        Passed to the Dirichlet partition (0: accept any draw, so tiny alphas never fail).
    seed : int, default 0
    class_names : sequence of str, optional
    title : str
    """
    from fedlib.data.partitions import dirichlet_partition, longtail_subsample, partition_stats

    owner = "partition_slider_figure"
    y = np.asarray(labels)
    alphas = list(alphas)
    factors = list(imbalance_factors)
    if not alphas or not factors:
        raise ValueError(f"{owner}: 'alphas' and 'imbalance_factors' must not be empty.")
    for a in alphas:
        check_param(owner, "alphas", a, Interval(float, 0, None, closed="neither"))
    for f in factors:
        check_param(owner, "imbalance_factors", f, Interval(float, 1, None))
    num_classes = int(y.max()) + 1
    classes = _names(owner, "class_names", class_names, "class", num_classes)
    clients = [f"client {k}" for k in range(num_clients)]

    states = []
    for factor in factors:
        keep = (
            np.arange(y.size)
            if factor == 1
            else longtail_subsample(y, factor, seed, num_classes=num_classes)
        )
        for alpha in alphas:
            parts = dirichlet_partition(
                y[keep], num_clients, alpha, min_size=min_size, seed=seed
            )
            table = partition_stats(y[keep], parts, num_classes).to_numpy()
            states.append((factor, alpha, table))

    zmax = max(int(t.max()) for _, _, t in states) or 1
    first = states[0][2]
    fig = go.Figure(
        go.Heatmap(
            z=first,
            x=classes,
            y=clients,
            text=first,
            texttemplate="%{text}",
            zmin=0,
            zmax=zmax,
            colorscale="Blues",
            colorbar={"title": "images"},
            hovertemplate="%{y}<br>%{x}: %{z} images<extra></extra>",
        )
    )

    def label(factor, alpha):
        return f"α={alpha:g}" if len(factors) == 1 else f"IF={factor:g}, α={alpha:g}"

    def heading(factor, alpha, table):
        return f"{title}: {label(factor, alpha)} ({int(table.sum())} images)"

    steps = [
        {
            "label": label(factor, alpha),
            "method": "update",
            "args": [
                {"z": [table.tolist()], "text": [table.tolist()]},
                {"title.text": heading(factor, alpha, table)},
            ],
        }
        for factor, alpha, table in states
    ]
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title={"text": heading(*states[0])},
        xaxis_title="class",
        yaxis_title="client",
        height=_BASE_HEIGHT + 60 + _HEIGHT_PER_CLIENT * num_clients,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        sliders=[
            {
                "active": 0,
                "currentvalue": {"prefix": "" if len(factors) > 1 else "Dirichlet "},
                "pad": {"t": 40},
                "steps": steps,
            }
        ],
    )
    return fig
