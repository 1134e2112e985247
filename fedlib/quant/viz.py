"""Plotly figures of quantization: the search step by step, weight histograms, accuracy vs bits.

Every figure is precomputed (sliders step through stored states), so it stays interactive in the
static book.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from fedlib.quant.quantizers import normalized_weight

__all__ = ["accuracy_bits_figure", "search_figure", "weight_histogram_figure"]

_PALETTE = ("#3b6ea5", "#d1495b", "#edae49", "#00798c", "#66a182", "#8d6a9f", "#2e4057",
            "#f28482", "#84a59d", "#6d597a")


def search_figure(trace: pd.DataFrame, *, title: str = "Bits per layer during the search",
                  target_bits: float | None = None) -> go.Figure:
    """Bits per layer at every check-point of a search, with a slider over the steps.

    Bars: the bits each layer would be exported with at that step; diamonds: ``E[b_l]``, the
    expected bits under the current bitwidth parameters. The title gives the parameter-weighted
    average of both.

    Parameters
    ----------
    trace : DataFrame
        A search's ``trace_`` (columns step, layer, weights, bits, expected_bits).
    target_bits : float, optional
        Drawn as a dashed line.
    """
    steps = sorted(trace["step"].unique())
    layers = list(dict.fromkeys(trace["layer"]))
    sizes = trace.drop_duplicates("layer").set_index("layer")["weights"]
    labels = [f"{name}<br>{int(sizes[name]):,} weights" for name in layers]

    def at(step: int) -> tuple[list[float], list[float], str]:
        rows = trace[trace["step"] == step].set_index("layer").loc[layers]
        w = rows["weights"].to_numpy(float)
        bits, expected = rows["bits"].to_numpy(float), rows["expected_bits"].to_numpy(float)
        head = (f"{title}: step {step}, average {np.dot(w, bits) / w.sum():.2f} bits "
                f"(expected {np.dot(w, expected) / w.sum():.2f})")
        return bits.tolist(), expected.tolist(), head

    bits, expected, head = at(steps[0])
    fig = go.Figure([
        go.Bar(x=labels, y=bits, name="exported bits", marker_color=_PALETTE[0]),
        go.Scatter(x=labels, y=expected, name="expected bits E[b]", mode="markers",
                   marker={"symbol": "diamond", "size": 12, "color": _PALETTE[1]}),
    ])
    slider_steps = []
    for step in steps:
        b, e, h = at(step)
        slider_steps.append({"label": str(step), "method": "update",
                             "args": [{"y": [b, e]}, {"title": h}]})
    top = float(max(trace["bits"].max(), trace["expected_bits"].max())) + 0.5
    if target_bits is not None:
        fig.add_hline(y=target_bits, line_dash="dash", line_color="grey",
                      annotation_text=f"target {target_bits:g} bits (average)",
                      annotation_position="top right")
    fig.update_layout(
        title=head, height=460, yaxis={"title": "bits", "range": [0, top]},
        legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right",
                "yanchor": "bottom"},
        sliders=[{"active": 0, "currentvalue": {"prefix": "step "}, "steps": slider_steps,
                  "pad": {"t": 60}}],
        margin={"t": 90},
    )
    return fig


def weight_histogram_figure(
    weights: Mapping[str, torch.Tensor], bits: int, *, title: str = "", bins: int = 120
) -> go.Figure:
    """Histograms of the normalised weights ``w_n`` of one layer under several trainings, with
    the ``2^b`` quantization levels ``k / (2^b - 1)`` as vertical lines.

    Parameters
    ----------
    weights : mapping of label to Tensor
        The layer's latent (full-precision) weights after each training.
    bits : int
        The layer's bitwidth (where the levels are drawn).
    """
    fig = go.Figure()
    for i, (label, w) in enumerate(weights.items()):
        w_n = normalized_weight(w.detach().float().cpu()).flatten().numpy()
        fig.add_histogram(x=w_n, name=label, nbinsx=bins, opacity=0.6,
                          histnorm="probability", marker_color=_PALETTE[i % len(_PALETTE)])
    levels = 2**bits - 1
    for k in range(levels + 1):
        fig.add_vline(x=k / levels, line_dash="dot", line_color="black", line_width=1)
    fig.update_layout(barmode="overlay", height=380, title=title,
                      xaxis={"title": "normalised weight w_n (dotted: quantization levels)",
                             "range": [-0.02, 1.02]},
                      yaxis={"title": "share of the layer's weights"})
    return fig


def accuracy_bits_figure(
    table: pd.DataFrame,
    *,
    metric: str = "accuracy",
    title: str = "",
    reference: str = "full precision",
    order: Sequence[str] | None = None,
) -> go.Figure:
    """Mean metric against mean average bits per method, with the spread over seeds as error
    bars; the full-precision reference (32 bits) as a dashed line.

    Parameters
    ----------
    table : DataFrame
        One row per (method, seed) with columns method, ``metric`` and average_bits
        (:func:`fedlib.quant.compare`'s table).
    """
    methods = list(order) if order is not None else list(dict.fromkeys(table["method"]))
    fig = go.Figure()
    grouped = table.groupby("method", sort=False)
    for i, method in enumerate(m for m in methods if m != reference):
        rows = grouped.get_group(method)
        fig.add_scatter(
            x=[rows["average_bits"].mean()], y=[rows[metric].mean()], name=method,
            mode="markers", marker={"size": 11, "color": _PALETTE[i % len(_PALETTE)],
                                    "symbol": "circle" if method.startswith("SDQ") else "square"},
            error_x={"type": "data", "array": [_std(rows["average_bits"])]},
            error_y={"type": "data", "array": [_std(rows[metric])]},
        )
    if reference in grouped.groups:
        value = grouped.get_group(reference)[metric].mean()
        fig.add_hline(y=value, line_dash="dash", line_color="grey",
                      annotation_text=f"{reference} (32 bits): {value:.3f}",
                      annotation_position="bottom right")
    fig.update_layout(title=title, height=440,
                      xaxis={"title": "average weight bits (parameter-weighted)"},
                      yaxis={"title": metric.replace("_", " ")})
    return fig


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0
