"""The book's build steps on tiny hand-made inputs: staging (time to run, parameter tags),
widgets drawn from saved state, and the Sphinx extension's page rewriting."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ci"))
sys.path.insert(0, str(ROOT / "book" / "_toolchain"))

from fedlib_book import (  # noqa: E402
    CARTESIAN_BUNDLE,
    FULL_BUNDLE,
    _unique_scripts,
    plot_trace_types,
    plotly_bundle,
    strip_plotly_loaders,
    used_icon_codepoints,
)
from stage_book import (  # noqa: E402
    format_duration,
    insert_after_title,
    run_time_line,
    set_parameter_tags,
    where_it_ran,
)
from static_widgets import LIVE_NOTE, WIDGET_STATE, WIDGET_VIEW, render_notebook_widgets  # noqa: E402


def _stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


# ----------------------------------------------------------------------------- time to run


@pytest.mark.parametrize(("seconds", "text"), [
    (0.2, "1 s"), (42.4, "42 s"), (89.6, "90 s"), (213.3, "3.6 min"), (840, "14 min"),
    (5300, "88 min"), (5400, "1.5 h"),
])  # fmt: skip
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_where_it_ran_reads_print_config():
    def nb(printed):
        return {"cells": [{"cell_type": "code", "outputs": [_stream(printed)]}]}

    assert where_it_ran(nb("fedlib  0.1\ndevice         cpu\ntorch threads  1\n")) == \
        "one CPU thread"
    assert where_it_ran(nb("device  cpu\ntorch threads  4\n")) == "4 CPU threads"
    assert where_it_ran(nb("device  cuda:0\ntorch threads  1\n")) == "a GPU (cuda:0)"
    assert where_it_ran(nb("nothing printed about it\n")) == "the CPU"


def test_run_time_line_from_papermill_metadata():
    printed = {"cell_type": "code", "outputs": [_stream("device  cpu\ntorch threads  1\n")]}
    nb = {"metadata": {"papermill": {"duration": 213.3}}, "cells": [printed]}
    line = run_time_line(nb)
    assert line == ("```{container} chapter-run-time\n**Time to run:** about 3.6 min on one "
                    "CPU thread with the parameters shown below (measured by papermill when "
                    "this page was built).\n```")
    gpu = {"metadata": {"papermill": {"duration": 30}},
           "cells": [{"cell_type": "code", "outputs": [_stream("device  cuda\n")]}]}
    assert "about 3.6 min on one CPU thread with the parameters shown below, about 30 s on " \
        "a GPU (cuda) (measured" in run_time_line(nb, gpu)
    assert run_time_line({"metadata": {}, "cells": []}) is None


def test_insert_after_title_splits_the_title_cell():
    nb = {"cells": [
        {"cell_type": "code", "source": "# a comment, not a title", "outputs": []},
        {"cell_type": "markdown", "id": "t", "metadata": {},
         "source": ["# 1. Title\n", "\n", "Intro text.\n"]},
    ]}  # fmt: skip
    assert insert_after_title(nb, "LINE")
    assert [c["source"] for c in nb["cells"][1:]] == ["# 1. Title\n", "LINE", "Intro text.\n"]
    assert nb["cells"][2]["metadata"]["tags"] == ["run-time"]
    assert len({c.get("id") for c in nb["cells"][1:]}) == 3
    assert not insert_after_title({"cells": [{"cell_type": "markdown", "source": "## h2"}]}, "x")


def test_parameter_tags_follow_the_source():
    nb = {"cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters", "hide-input"]}},
        {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}},
        {"cell_type": "code", "metadata": {}},
    ]}  # fmt: skip
    set_parameter_tags(nb, ["parameters"])
    assert [c["metadata"]["tags"] for c in nb["cells"]] == [
        ["parameters"], ["injected-parameters", "remove-cell"], []]


# ----------------------------------------------------------------------------- widgets


def _interact_notebook() -> dict:
    state = {
        "box": {"model_name": "VBoxModel", "state": {
            "children": ["IPY_MODEL_slider", "IPY_MODEL_menu", "IPY_MODEL_out"]}},
        "slider": {"model_name": "IntSliderModel", "state": {
            "description": "local epochs", "min": 1, "max": 8, "step": 1, "value": 2}},
        "menu": {"model_name": "DropdownModel", "state": {
            "description": "loss", "_options_labels": ["ce", "bsm"], "index": 1}},
        "out": {"model_name": "OutputModel", "state": {"outputs": [_stream("acc <0.5>\n")]}},
        "style": {"model_name": "SliderStyleModel", "state": {}},
    }  # fmt: skip
    view = {"output_type": "display_data", "metadata": {},
            "data": {WIDGET_VIEW: {"model_id": "box", "version_major": 2},
                     "text/plain": "VBox(...)"}}  # fmt: skip
    return {"metadata": {"widgets": {WIDGET_STATE: {"state": state}}},
            "cells": [{"cell_type": "code", "outputs": [view]}]}


def test_interact_panel_drawn_from_saved_state():
    nb = _interact_notebook()
    assert render_notebook_widgets(nb) == []
    assert "widgets" not in nb["metadata"]
    (output,) = nb["cells"][0]["outputs"]
    assert output["output_type"] == "display_data" and list(output["data"]) == ["text/html"]
    html = output["data"]["text/html"]
    assert html == (
        f'<div class="static-widget"><p class="static-widget-note">{LIVE_NOTE}</p>'
        '<div class="static-widget-box-v">'
        '<div class="static-widget-row"><label>local epochs</label><input type="range" '
        'disabled min="1" max="8" step="1" value="2"><span class="static-widget-value">2</span>'
        '</div>'
        '<div class="static-widget-row"><label>loss</label><select disabled><option>ce'
        '</option><option selected>bsm</option></select></div>'
        '<pre>acc &lt;0.5&gt;\n</pre></div></div>')


def test_unknown_widget_shown_as_a_placeholder_and_reported():
    nb = _interact_notebook()
    nb["metadata"]["widgets"][WIDGET_STATE]["state"]["menu"]["model_name"] = "ColorPickerModel"
    assert render_notebook_widgets(nb) == ["ColorPickerModel"]
    assert "[ColorPicker]" in nb["cells"][0]["outputs"][0]["data"]["text/html"]


# ----------------------------------------------------------------------------- Sphinx extension

FIGURE = ('<div><script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/3.2.2/es5/'
          'tex-svg.min.js"></script><script>if (window.MathJax && window.MathJax.Hub && '
          'window.MathJax.Hub.Config) {window.MathJax.Hub.Config({SVG: {font: "STIX-Web"}});}'
          '</script><div id="a" class="plotly-graph-div"></div><script>'
          'Plotly.newPlot(  "a", [{"type":"bar","y":[1]},{"y":[2]}], {"title":"t"}, {})'
          '</script></div>')
BUNDLE = '<script>/**\n* plotly.js v4.1.1\n* Copyright\n*/ var Plotly = {};</script>'


def test_plotly_loaders_are_stripped_and_the_figure_kept():
    html = strip_plotly_loaders("<p>x</p>" + BUNDLE + FIGURE)
    assert "plotly.js v" not in html and "cdnjs" not in html and "MathJax" not in html
    assert html.startswith("<p>x</p><div><div id=\"a\"") and "Plotly.newPlot(" in html


def test_trace_types_choose_the_bundle():
    assert plot_trace_types(FIGURE) == {"bar", "scatter"}
    assert plotly_bundle({"bar", "scatter"}) == CARTESIAN_BUNDLE
    three_d = FIGURE.replace('"type":"bar"', '"type":"scatter3d"')
    assert plotly_bundle(plot_trace_types(three_d)) == FULL_BUNDLE
    assert plot_trace_types("Plotly.newPlot(a, data)") is None
    assert plotly_bundle(None) == FULL_BUNDLE


def test_repeated_inline_scripts_kept_once():
    from sphinx.builders.html._assets import _JavaScript

    scripts = [_JavaScript("a.js"), _JavaScript(None, body="const X = 1"),
               _JavaScript("", body="const X = 1", priority=400), _JavaScript("a.js"),
               _JavaScript("a.js", **{"async": "async"})]  # fmt: skip
    assert _unique_scripts(scripts) == [scripts[0], scripts[1], scripts[4]]


def test_icons_in_use(tmp_path):
    static = tmp_path / "_static"
    (static / "scripts").mkdir(parents=True)
    (static / "theme.css").write_text(
        '.fa-github:before{content:"\\f09b"}.fa-bars:before,.fa-navicon:before'
        '{content:"\\f0c9"}.fa-unused:before{content:"\\f001"}'
        ':root{--pst-icon-bell:"\uf0f3"}')
    (static / "scripts" / "theme.js").write_text('icon.className = "fa-solid fa-navicon";')
    page = tmp_path / "page.html"
    page.write_text('<i class="fa-brands fa-github"></i>')
    assert used_icon_codepoints(static, [page]) == {0xF09B, 0xF0C9, 0xF0F3}
