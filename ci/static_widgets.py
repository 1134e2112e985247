"""ipywidgets drawn as static HTML from the state that papermill saved in a notebook.

A static book page has no kernel, so a widget's Python callbacks (``interact``, ``observe``)
can never run there: a live slider would move without changing anything. The book therefore
shows each widget view as what it is in the page: the controls at their saved values (disabled)
and the output they produced, under a note that the controls are live in Jupyter or Colab.
This also spares every chapter page the 4.4 MB widget manager (1.1 MB gzipped) and its console
errors.

    html, unknown = render_view(model_id, state)

``state`` maps model ids to ``{"model_name", "state", "buffers"?}`` (the notebook's
``metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]``). ``unknown`` lists
the model names that have no static form here (they are shown as a placeholder).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
MODEL_PREFIX = "IPY_MODEL_"
LIVE_NOTE = ("Interactive in Jupyter or Colab, where the controls run Python; shown here at "
             "the values the book was built with.")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _text(value: object) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _label(state: dict) -> str:
    description = state.get("description") or ""
    return f"<label>{html.escape(description)}</label>" if description else ""


def _value(text: object) -> str:
    return f'<span class="static-widget-value">{html.escape(str(text))}</span>'


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _row(state: dict, control: str, readout: str = "") -> str:
    return f'<div class="static-widget-row">{_label(state)}{control}{readout}</div>'


def _slider(state: dict) -> str:
    value = state.get("value", 0)
    if isinstance(value, list):  # range sliders
        low, high = value
        control = (f'<input type="range" disabled min="{state.get("min", 0)}" '
                   f'max="{state.get("max", 100)}" value="{low}">')
        return _row(state, control, _value(f"{_number(low)} – {_number(high)}"))
    position = value
    if state.get("_model_name") == "FloatLogSliderModel" and value > 0:  # min, max: exponents
        position = math.log(value, state.get("base", 10))
    control = (f'<input type="range" disabled min="{state.get("min", 0)}" '
               f'max="{state.get("max", 100)}" step="{state.get("step", 1)}" '
               f'value="{position}">')
    return _row(state, control, _value(_number(value)))


def _selection_slider(state: dict) -> str:
    labels = state.get("_options_labels", [])
    index = state.get("index", 0)
    if isinstance(index, list):
        shown = " – ".join(labels[i] for i in index if 0 <= i < len(labels))
        index = index[0] if index else 0
    else:
        shown = labels[index] if 0 <= index < len(labels) else ""
    control = (f'<input type="range" disabled min="0" max="{max(len(labels) - 1, 0)}" '
               f'value="{index}">')
    return _row(state, control, _value(shown))


def _select(state: dict) -> str:
    labels = state.get("_options_labels", [])
    index = state.get("index")
    chosen = set(index) if isinstance(index, list) else {index}
    options = "".join(
        f'<option{" selected" if i in chosen else ""}>{html.escape(label)}</option>'
        for i, label in enumerate(labels))  # fmt: skip
    return _row(state, f"<select disabled>{options}</select>")


def _checkbox(state: dict) -> str:
    checked = " checked" if state.get("value") else ""
    return _row(state, f'<input type="checkbox" disabled{checked}>')


def _text_input(state: dict) -> str:
    value = html.escape(str(state.get("value", "")), quote=True)
    return _row(state, f'<input type="text" disabled value="{value}">')


def _label_widget(state: dict) -> str:
    return _row(state, _value(state.get("value", "")))


def _html_widget(state: dict) -> str:
    value = state.get("value", "")
    return f'<div class="static-widget-row">{_label(state)}<div>{value}</div></div>'


def _button(state: dict) -> str:
    return f'<button type="button" disabled>{html.escape(state.get("description", ""))}</button>'


def _progress(state: dict) -> str:
    control = f'<progress value="{state.get("value", 0)}" max="{state.get("max", 100)}"></progress>'
    return _row(state, control, _value(_number(state.get("value", 0))))


def _image(state: dict, buffers: dict) -> str:
    data = buffers.get("value")
    if not data:
        return ""
    fmt = html.escape(state.get("format", "png"))
    return f'<img alt="" src="data:image/{fmt};base64,{data}">'


def render_output(output: dict) -> str:
    """One notebook output (stream, display data, result or error) as HTML."""
    kind = output.get("output_type")
    if kind == "stream":
        text = _ANSI.sub("", _text(output.get("text", "")))
        return f"<pre>{html.escape(text)}</pre>"
    if kind == "error":
        text = _ANSI.sub("", "\n".join(output.get("traceback", [])))
        return f'<pre class="static-widget-error">{html.escape(text)}</pre>'
    data = output.get("data", {})
    if "text/html" in data:
        return _text(data["text/html"])
    for mime in ("image/png", "image/jpeg", "image/gif"):
        if mime in data:
            return f'<img alt="" src="data:{mime};base64,{_text(data[mime]).strip()}">'
    if "image/svg+xml" in data:
        return _text(data["image/svg+xml"])
    if "text/plain" in data:
        return f"<pre>{html.escape(_text(data['text/plain']))}</pre>"
    return ""


_LEAVES: dict[str, Callable[[dict], str]] = {
    "IntSliderModel": _slider, "FloatSliderModel": _slider, "FloatLogSliderModel": _slider,
    "IntRangeSliderModel": _slider, "FloatRangeSliderModel": _slider,
    "SelectionSliderModel": _selection_slider, "SelectionRangeSliderModel": _selection_slider,
    "DropdownModel": _select, "SelectModel": _select, "RadioButtonsModel": _select,
    "ToggleButtonsModel": _select, "SelectMultipleModel": _select,
    "CheckboxModel": _checkbox, "ToggleButtonModel": _checkbox, "ValidModel": _checkbox,
    "TextModel": _text_input, "TextareaModel": _text_input, "IntTextModel": _text_input,
    "FloatTextModel": _text_input, "BoundedIntTextModel": _text_input,
    "BoundedFloatTextModel": _text_input, "ComboboxModel": _text_input,
    "LabelModel": _label_widget, "HTMLModel": _html_widget, "HTMLMathModel": _html_widget,
    "ButtonModel": _button, "IntProgressModel": _progress, "FloatProgressModel": _progress,
    "PlayModel": _label_widget,
}  # fmt: skip
_BOXES = {"VBoxModel": "v", "BoxModel": "v", "GridBoxModel": "v", "HBoxModel": "h"}
_TITLED = {"TabModel", "AccordionModel", "StackModel"}


def _children(state: dict) -> list[str]:
    return [child.removeprefix(MODEL_PREFIX) for child in state.get("children", [])
            if isinstance(child, str)]


def _buffers(model: dict) -> dict:
    return {"/".join(map(str, buffer["path"])): buffer.get("data", "")
            for buffer in model.get("buffers", [])}


def _render(model_id: str, states: dict, unknown: list[str], depth: int = 0) -> str:
    model = states.get(model_id)
    if model is None or depth > 20:
        return ""
    name = model.get("model_name", "")
    state = dict(model.get("state", {}), _model_name=name)
    if name in _LEAVES:
        return _LEAVES[name](state)
    if name == "ImageModel":
        return _image(state, _buffers(model))
    if name == "OutputModel":
        return "".join(render_output(out) for out in state.get("outputs", []))
    if name in _BOXES:
        inner = "".join(_render(child, states, unknown, depth + 1) for child in _children(state))
        return f'<div class="static-widget-box-{_BOXES[name]}">{inner}</div>'
    if name in _TITLED:
        titles = state.get("titles") or []
        if isinstance(titles, dict):  # ipywidgets 7 saved {"0": "title"}
            titles = [titles.get(str(i), "") for i in range(len(_children(state)))]
        parts = []
        for i, child in enumerate(_children(state)):
            title = titles[i] if i < len(titles) and titles[i] else f"{i + 1}"
            parts.append(f"<p><strong>{html.escape(title)}</strong></p>"
                         f"{_render(child, states, unknown, depth + 1)}")
        return f'<div class="static-widget-box-v">{"".join(parts)}</div>'
    unknown.append(name)
    placeholder = _value("[" + name.removesuffix("Model") + "]")
    return f'<div class="static-widget-row">{placeholder}</div>'


def render_view(model_id: str, states: dict) -> tuple[str, list[str]]:
    """The widget ``model_id`` (and its children) as one static HTML panel."""
    unknown: list[str] = []
    body = _render(model_id, states, unknown)
    panel = (f'<div class="static-widget"><p class="static-widget-note">{LIVE_NOTE}</p>'
             f"{body}</div>")
    return panel, unknown


def render_notebook_widgets(nb: dict) -> list[str]:
    """Replace every widget view output of ``nb`` (a notebook as a dict) by its static HTML and
    drop the saved widget state; return the widget model names without a static form."""
    widgets = nb.get("metadata", {}).get("widgets", {})
    states = widgets.get(WIDGET_STATE, {}).get("state", {})
    unknown: list[str] = []
    for cell in nb.get("cells", []):
        for i, output in enumerate(cell.get("outputs", [])):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if not view:
                continue
            panel, missing = render_view(view.get("model_id", ""), states)
            unknown += missing
            cell["outputs"][i] = {
                "output_type": "display_data", "metadata": {},
                "data": {"text/html": panel},
            }  # fmt: skip
    nb.get("metadata", {}).pop("widgets", None)
    return sorted(set(unknown))
