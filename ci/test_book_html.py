"""Checks of the built book in headless Chromium: what a reader of the static pages sees.

Run by ``make html-check`` after ``make execute html``::

    pytest ci/test_book_html.py

The site in ``_build/html`` is served on 127.0.0.1 and every chapter page is loaded in Debian's
Chromium (``CHROMIUM`` overrides the binary) with the network closed to everything else, so
plots and widgets must work offline. For each chapter page: every plotly figure of the executed
notebook is drawn, every widget is rendered from its saved state, the Colab link is there, and
no traceback is shown. The build log must not report an output that the book dropped.
Screenshots and DOM dumps land in ``_build/pages/`` for a look by eye.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import COLAB_URL, REPO_ROOT, chapter_notebooks  # noqa: E402

BUILD = REPO_ROOT / "_build"
HTML_DIR = BUILD / "html"
EXECUTED_DIR = BUILD / "executed"
BUILD_LOG = BUILD / "book_build.log"
PAGES_DIR = BUILD / "pages"

# Headless, no sandbox (CI runs as root), and no background connections: the machine's network
# is closed, and Chromium would otherwise keep trying to reach its update and sync services.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--hide-scrollbars", "--window-size=1280,2400",
    # virtual time: the page gets 10 s of timers, requests and promises, usually in far less
    "--virtual-time-budget=10000",
]  # fmt: skip
PAGE_TIMEOUT_SECONDS = 120

PLOTLY_JSON = "application/vnd.plotly.v1+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_VIEW_SCRIPT = f'<script type="{WIDGET_VIEW}">'
TRACEBACK_TEXT = "Traceback (most recent call last)"

CHAPTERS = [path.stem for path in chapter_notebooks()]


def chromium_binary() -> str:
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not binary:
        pytest.fail("No Chromium: install Debian's 'chromium' (make chromium) or set CHROMIUM.")
    return binary


@pytest.fixture(scope="session")
def site_url():
    """Serve the built site on a free loopback port for the whole session."""
    if not (HTML_DIR / "index.html").is_file():
        pytest.fail(f"No {HTML_DIR}/index.html: run `make execute html` first.")

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(HTML_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def rendered(site_url):
    """``rendered(page)``: the page's DOM after Chromium loaded it and its scripts ran (cached).

    A screenshot and the DOM are kept in ``_build/pages/``.
    """
    cache: dict[str, str] = {}
    PAGES_DIR.mkdir(parents=True, exist_ok=True)
    binary = chromium_binary()

    def render(page: str) -> str:
        if page not in cache:
            name = page.replace("/", "__").removesuffix(".html")
            with tempfile.TemporaryDirectory() as profile:
                proc = subprocess.run(
                    [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                     f"--screenshot={PAGES_DIR / f'{name}.png'}", "--dump-dom",
                     f"{site_url}/{page}"],
                    capture_output=True, text=True, timeout=PAGE_TIMEOUT_SECONDS, check=False,
                )  # fmt: skip
            if proc.returncode != 0 or "<body" not in proc.stdout:
                pytest.fail(f"Chromium could not render {page} (exit {proc.returncode}):\n"
                            f"{proc.stderr[-3000:]}")
            (PAGES_DIR / f"{name}.dom.html").write_text(proc.stdout)
            cache[page] = proc.stdout
        return cache[page]

    return render


def executed_outputs(stem: str) -> list[dict]:
    path = EXECUTED_DIR / f"{stem}.ipynb"
    if not path.is_file():
        pytest.fail(f"No executed copy {path}: run `make execute` first.")
    cells = json.loads(path.read_text())["cells"]
    return [out for cell in cells if cell["cell_type"] == "code" for out in cell["outputs"]]


def count_plotly_figures(outputs: list[dict]) -> int:
    """Figures in a notebook's outputs, whichever renderer stored them (HTML div or JSON)."""
    count = 0
    for out in outputs:
        data = out.get("data", {})
        html = "".join(data.get("text/html", ""))
        count += html.count('class="plotly-graph-div"') or int(PLOTLY_JSON in data)
    return count


def count_widget_views(outputs: list[dict]) -> int:
    return sum(WIDGET_VIEW in out.get("data", {}) for out in outputs)


def chapter_page(stem: str) -> str:
    page = f"notebooks/{stem}.html"
    if not (HTML_DIR / page).is_file():
        pytest.fail(f"Chapter {stem} has no page {HTML_DIR / page}.")
    return page


def test_build_log_reports_no_dropped_output():
    """myst-nb warns ``mystnb.unknown_mime_type`` for an output it cannot show (a lost figure)."""
    if not BUILD_LOG.is_file():
        pytest.fail(f"No build log {BUILD_LOG}: run `make html` first.")
    log = BUILD_LOG.read_text(errors="replace")
    dropped = [line for line in log.splitlines()
               if "mystnb.unknown_mime_type" in line or "unknown output mime type" in line]
    assert not dropped, "The book dropped outputs:\n" + "\n".join(dropped)


def test_index_page_renders(rendered):
    dom = rendered("index.html")
    assert "Federated Learning for Medical Imaging" in dom
    assert TRACEBACK_TEXT not in dom


@pytest.mark.parametrize("stem", CHAPTERS)
def test_plots_are_drawn(stem, rendered):
    expected = count_plotly_figures(executed_outputs(stem))
    page = chapter_page(stem)
    source = (HTML_DIR / page).read_text()
    dom = rendered(page)
    assert expected >= 1, f"{stem}: the executed notebook holds no plotly figure."
    assert source.count("Plotly.newPlot") >= expected, (
        f"{stem}: the page source draws fewer figures than the notebook's {expected} "
        "(was PLOTLY_RENDERER=notebook set for papermill?)")
    drawn = len(re.findall(r'class="plotly-graph-div js-plotly-plot"', dom))
    assert drawn == expected and "main-svg" in dom, (
        f"{stem}: {drawn} of {expected} plotly figures were drawn in the browser.")


@pytest.mark.parametrize("stem", CHAPTERS)
def test_widgets_render_from_saved_state(stem, rendered):
    expected = count_widget_views(executed_outputs(stem))
    dom = rendered(chapter_page(stem))
    assert expected >= 1, f"{stem}: the executed notebook holds no widget."
    assert dom.count(WIDGET_VIEW_SCRIPT) == expected, (
        f"{stem}: the page embeds {dom.count(WIDGET_VIEW_SCRIPT)} widget views, "
        f"the notebook has {expected}.")
    # the widget manager puts each rendered view in a div.widget-subarea before its <script>
    rendered_views = len(re.findall(
        r'<div class="widget-subarea">\s*<div[^>]*jupyter-widgets', dom))
    assert rendered_views == expected, (
        f"{stem}: {rendered_views} of {expected} widgets were rendered "
        "(is the widget JavaScript in book/_widgets_js served?).")


@pytest.mark.parametrize("stem", CHAPTERS)
def test_colab_link(stem, rendered):
    dom = rendered(chapter_page(stem))
    assert COLAB_URL.format(f"{stem}.ipynb") in dom


@pytest.mark.parametrize("stem", CHAPTERS)
def test_no_traceback(stem, rendered):
    dom = rendered(chapter_page(stem))
    assert TRACEBACK_TEXT not in dom, f"{stem}: the page shows a traceback."
    error_outputs = re.findall(r'class="output (?:error|traceback)[^"]*"', dom)
    assert not error_outputs, f"{stem}: the page shows error outputs {error_outputs}."
