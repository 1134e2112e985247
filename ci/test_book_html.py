"""Checks of the built book in headless Chromium, with the network closed: what a reader sees.

Run by ``make html-check`` after ``make execute html``::

    pytest ci/test_book_html.py

The site in ``_build/html`` is served on 127.0.0.1 and every page of ``_toc.yml`` is loaded in
Debian's Chromium (``CHROMIUM`` overrides the binary; ``browser.py`` drives it over the DevTools
protocol) at a phone's width (390 px) and a laptop's (1280 px), with every connection except
loopback refused, so everything must come from the book's own files. Every check applies to
every page, so a new chapter inherits them all:

* the network is closed (a page that fetches a CDN script fails to);
* no console error, uncaught exception or promise rejection, failed or 4xx request;
* math is typeset (no raw ``\\(``, ``\\[``, ``$$`` or ``\\begin`` left in the visible text);
* page weight: the page and every resource it loads, each gzipped, add up to at most 1.5 MB;
* every plotly figure of the executed notebook is drawn; every widget view is shown from its
  saved state; the Colab link is there; no traceback; the ``parameters`` cell is shown and
  the "time to run" line sits under the title;
* nothing is wider than the page (no horizontal scrolling of the page), no figure, table,
  image or code block wider than the content column, no code block that hides text behind a
  scrollbar, and at 1280 px no table that needs scrolling and no code line that wraps;
* in figures: titles, subplot titles, axis titles, tick labels and legends do not overlap one
  another or plotly's toolbar and stay inside the figure; heatmap numbers do not overlap and
  are at least 8 px.

Timings (page load, last plot drawn) and page weights are printed in a summary at the end and
kept in ``_build/pages/summary.txt``; timings are not asserted, they depend on the machine's
load. With ``BOOK_SCREENSHOTS=1`` (``make screenshots``) a full-page screenshot of every page at
both widths lands in ``_build/pages/`` too (several seconds a long page, so not by default).
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import Chromium, chromium_binary, network_is_closed  # noqa: E402
from pipeline import COLAB_URL, REPO_ROOT, chapter_notebooks  # noqa: E402
from stage_book import toc_files  # noqa: E402
from static_widgets import WIDGET_VIEW  # noqa: E402

BUILD = REPO_ROOT / "_build"
HTML_DIR = BUILD / "html"
EXECUTED_DIR = Path(os.environ.get("BOOK_EXECUTED", BUILD / "executed"))  # as make html used
BUILD_LOG = BUILD / "book_build.log"
PAGES_DIR = BUILD / "pages"

WIDTHS = (390, 1280)
WIDE = 1280
MAX_PAGE_GZIP_BYTES = 1_500_000
PLOT_TARGET_MS = 2000  # reported in the summary, not asserted (machine load)
SCREENSHOTS = os.environ.get("BOOK_SCREENSHOTS", "") not in ("", "0")
PAGE_TIMEOUT_S = 40
CDN_PROBE = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
TOLERANCE_PX = 1.5

PLOTLY_JSON = "application/vnd.plotly.v1+json"
TRACEBACK_TEXT = "Traceback (most recent call last)"

CHAPTERS = [path.stem for path in chapter_notebooks()]
PAGES = [f"{name}.html" for name in toc_files(yaml.safe_load((REPO_ROOT / "_toc.yml").read_text()))]

# Runs in the loaded page; returns what the checks below look at.
PAGE_PROBE = r"""
(() => {
  const rect = (el) => el.getBoundingClientRect();
  const visible = (el) => {
    const r = rect(el);
    const style = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && style.visibility !== 'hidden' &&
      style.display !== 'none' && parseFloat(style.opacity || '1') > 0.01;
  };
  const describe = (el) => {
    const text = (el.innerText || el.textContent || '').trim().replace(/\s+/g, ' ');
    const classes = [...el.classList].slice(0, 2).join('.');
    return `${el.tagName.toLowerCase()}.${classes} "${text.slice(0, 60)}"`;
  };
  const column = document.querySelector('article.bd-article') ||
    document.querySelector('main') || document.body;
  const columnRight = rect(column).right;

  // text a reader sees, outside code, scripts and typeset math
  const skip = 'pre, code, script, style, textarea, mjx-container, .MathJax, .plotly-graph-div';
  const rawMath = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip) || !visible(parent)) continue;
    const match = node.textContent.match(/\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{/);
    if (match) rawMath.push(node.textContent.trim().slice(0, 80));
  }
  const mathElements = document.querySelectorAll('span.math, div.math').length;
  const typeset = document.querySelectorAll('mjx-container').length;

  // anything wider than the column, code hiding text behind a scrollbar, tables that scroll
  const wide = [], clippedCode = [], scrollingTables = [], wrappedCode = [];
  // code cells whose lines wrap: rendered height above one line-height per source line
  for (const pre of document.querySelectorAll('article div.cell_input pre')) {
    if (!visible(pre)) continue;
    const style = getComputedStyle(pre);
    const lineHeight = parseFloat(style.lineHeight) || 1.2 * parseFloat(style.fontSize);
    const inner = pre.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
    const lines = pre.textContent.replace(/\n$/, '').split('\n');
    if (inner > (lines.length + 0.5) * lineHeight) {
      const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
      wrappedCode.push(`${longest.length} characters: ${longest.trim().slice(0, 60)}`);
    }
  }
  const blocks = document.querySelectorAll(
    'article .js-plotly-plot, article table, article img, article pre, article .static-widget,' +
    ' article .cell_output, article mjx-container[display="true"]');
  for (const el of blocks) {
    if (!visible(el)) continue;
    let box = el;
    // a table in a horizontally scrolling wrapper: the wrapper is what must fit
    for (let up = el.parentElement; up && up !== column; up = up.parentElement) {
      const overflow = getComputedStyle(up).overflowX;
      if (overflow === 'auto' || overflow === 'scroll') { box = up; break; }
    }
    if (rect(box).right > columnRight + 1.5) wide.push(describe(el));
    if (el.tagName === 'PRE' && el.scrollWidth > el.clientWidth + 1) clippedCode.push(describe(el));
    if (el.tagName === 'TABLE' && box !== el && box.scrollWidth > box.clientWidth + 1) {
      scrollingTables.push(describe(el));
    }
  }

  // figures: boxes of titles, axis titles, tick labels, legends; overlaps between them
  const figures = [];
  document.querySelectorAll('.js-plotly-plot').forEach((gd, index) => {
    const frame = rect(gd);
    const items = [];
    const add = (el, kind) => {
      if (!el || !visible(el)) return;
      const text = (el.textContent || '').trim();
      if (kind !== 'legend' && kind !== 'ticks' && !text) return;
      const r = rect(el);
      items.push({kind, text: text.slice(0, 40), l: r.left, t: r.top, r: r.right, b: r.bottom});
    };
    add(gd.querySelector('.g-gtitle .gtitle'), 'title');
    gd.querySelectorAll('g.annotation').forEach((el) => add(el, 'annotation'));
    gd.querySelectorAll('g[class^="g-x"][class$="title"], g[class^="g-y"][class$="title"]')
      .forEach((el) => add(el, 'axis title'));
    gd.querySelectorAll('.cbtitle').forEach((el) => add(el, 'colorbar title'));
    gd.querySelectorAll('g.legend > rect.bg').forEach((el) => add(el, 'legend'));
    gd.querySelectorAll('g.xaxislayer-above, g.yaxislayer-above').forEach((el) => {
      if (el.querySelector('text')) add(el, 'ticks');
    });
    const overlaps = [];
    const overlap = (a, b) => Math.min(a.r, b.r) - Math.max(a.l, b.l) > TOL &&
      Math.min(a.b, b.b) - Math.max(a.t, b.t) > TOL;
    for (let i = 0; i < items.length; i++) {
      for (let j = i + 1; j < items.length; j++) {
        const a = items[i], b = items[j];
        if (a.kind === 'ticks' && b.kind === 'ticks') continue;  // x and y ticks meet at corners
        if (overlap(a, b)) overlaps.push(`${a.kind} "${a.text}" / ${b.kind} "${b.text}"`);
      }
    }
    const outside = items.filter((a) => a.kind !== 'ticks' && (a.l < frame.left - TOL ||
      a.r > frame.right + TOL || a.t < frame.top - TOL || a.b > frame.bottom + TOL))
      .map((a) => `${a.kind} "${a.text}"`);
    const toolbar = gd.querySelector('.modebar-container .modebar, .modebar');
    const titles = items.filter((a) => a.kind === 'title' || a.kind === 'annotation');
    let toolbarOverTitle = [];
    if (toolbar && gd._context && gd._context.displayModeBar !== false) {
      const m = rect(toolbar);
      const box = {l: m.left, t: m.top, r: m.right, b: m.bottom};
      toolbarOverTitle = titles.filter((a) => overlap(a, box)).map((a) => a.text);
    }
    const cells = [...gd.querySelectorAll('g.heatmaplayer text')].filter(visible).map((el) => {
      const r = rect(el);
      return {l: r.left, t: r.top, r: r.right, b: r.bottom,
              size: parseFloat(getComputedStyle(el).fontSize)};
    });
    let heatmapOverlaps = 0;
    const sorted = cells.sort((a, b) => a.t - b.t || a.l - b.l);
    for (let i = 0; i < sorted.length; i++) {
      for (let j = i + 1; j < sorted.length && sorted[j].t < sorted[i].b; j++) {
        if (overlap(sorted[i], sorted[j])) heatmapOverlaps++;
      }
    }
    const minFont = cells.length ? Math.min(...cells.map((c) => c.size)) : null;
    figures.push({index, width: frame.width, overlaps, outside, toolbarOverTitle,
                  heatmapOverlaps, heatmapMinFont: minFont});
  });

  const parameters = document.querySelector('.cell.tag_parameters .cell_input');
  const runTime = document.querySelector('.chapter-run-time');
  return {
    rawMath, mathElements, typeset, wide, clippedCode, scrollingTables, wrappedCode, figures,
    pageWidth: document.documentElement.scrollWidth, viewport: window.innerWidth,
    plots: window.__bookPlots || {count: 0, drawn: 0, times: []},
    staticWidgets: document.querySelectorAll('.static-widget').length,
    parametersShown: parameters ? visible(parameters) : null,
    runTime: runTime ? runTime.textContent.trim() : null,
    runTimeAfterTitle: !!(runTime && document.querySelector('h1') &&
      (document.querySelector('h1').compareDocumentPosition(runTime) &
       Node.DOCUMENT_POSITION_FOLLOWING)),
  };
})()
""".replace("TOL", str(TOLERANCE_PX))


@dataclass
class PageReport:
    page: str
    width: int
    probe: dict
    console_errors: list[str]
    failed_requests: list[str]
    gzip_bytes: dict[str, int] = field(default_factory=dict)
    load_ms: float = 0.0

    @property
    def total_gzip(self) -> int:
        return sum(self.gzip_bytes.values())

    @property
    def last_plot_ms(self) -> float:
        return max(self.probe["plots"]["times"], default=0.0)


def local_file(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.hostname != "127.0.0.1":
        return None
    path = HTML_DIR / unquote(parsed.path).lstrip("/")
    if path.is_dir():
        path = path / "index.html"
    return path if path.is_file() else None


@functools.cache
def gzip_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=6))


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
def browser():
    binary = chromium_binary()
    if not binary:
        pytest.fail("No Chromium: install Debian's 'chromium' (make chromium) or set CHROMIUM.")
    with Chromium(binary) as chromium:
        yield chromium


@pytest.fixture(scope="session")
def reports(site_url, browser):
    """``reports(page, width)``: the page loaded once at that width (cached) and probed; its
    screenshot saved in ``_build/pages/`` when ``BOOK_SCREENSHOTS`` is set."""
    cache: dict[tuple[str, int], PageReport] = {}
    PAGES_DIR.mkdir(parents=True, exist_ok=True)

    def load(page: str, width: int) -> PageReport:
        if (page, width) not in cache:
            visit = browser.visit(f"{site_url}/{page}", width=width, timeout=PAGE_TIMEOUT_S)
            try:
                probe = visit.evaluate(PAGE_PROBE)
                if SCREENSHOTS:
                    name = page.replace("/", "__").removesuffix(".html")
                    visit.screenshot(PAGES_DIR / f"{name}.{width}.png")
            finally:
                visit.close()
            report = PageReport(page, width, probe, visit.console_errors, [],
                                load_ms=visit.load_ms)
            for response in visit.responses.values():
                if response.failed or response.status >= 400:
                    report.failed_requests.append(
                        f"{response.status or ''} {response.failed} {response.url}".strip())
                elif (path := local_file(response.url)) is not None:
                    report.gzip_bytes[urlparse(response.url).path] = gzip_size(path)
            cache[(page, width)] = report
        return cache[(page, width)]

    load.cache = cache
    return load


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


def chapter_page(stem: str) -> str:
    page = f"notebooks/{stem}.html"
    if not (HTML_DIR / page).is_file():
        pytest.fail(f"Chapter {stem} has no page {HTML_DIR / page}.")
    return page


PAGE_WIDTHS = [pytest.param(page, width, id=f"{page}-{width}px")
               for page in PAGES for width in WIDTHS]
CHAPTER_WIDTHS = [pytest.param(stem, width, id=f"{stem}-{width}px")
                  for stem in CHAPTERS for width in WIDTHS]


def test_network_is_closed(browser):
    closed, details = network_is_closed(browser, CDN_PROBE)
    assert closed, f"A CDN request did not fail, so the checks would not be offline: {details}"


def test_build_log_reports_no_dropped_output():
    """myst-nb warns ``mystnb.unknown_mime_type`` for an output it cannot show (a lost figure)."""
    if not BUILD_LOG.is_file():
        pytest.fail(f"No build log {BUILD_LOG}: run `make html` first.")
    log = BUILD_LOG.read_text(errors="replace")
    dropped = [line for line in log.splitlines()
               if "mystnb.unknown_mime_type" in line or "unknown output mime type" in line]
    assert not dropped, "The book dropped outputs:\n" + "\n".join(dropped)


@pytest.mark.parametrize(("page", "width"), PAGE_WIDTHS)
def test_no_console_errors_or_failed_requests(page, width, reports):
    report = reports(page, width)
    problems = report.console_errors + [f"request: {r}" for r in report.failed_requests]
    assert not problems, f"{page} at {width} px:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_math_is_typeset(page, reports):
    probe = reports(page, WIDE).probe
    assert not probe["rawMath"], f"{page} shows raw LaTeX: {probe['rawMath'][:5]}"
    assert probe["typeset"] >= probe["mathElements"], (
        f"{page}: {probe['typeset']} of {probe['mathElements']} formulas typeset by MathJax.")


@pytest.mark.parametrize("page", PAGES)
def test_page_weight(page, reports):
    report = reports(page, WIDE)
    heaviest = sorted(report.gzip_bytes.items(), key=lambda item: -item[1])[:6]
    assert report.total_gzip <= MAX_PAGE_GZIP_BYTES, (
        f"{page} weighs {report.total_gzip / 1e6:.2f} MB gzipped (at most "
        f"{MAX_PAGE_GZIP_BYTES / 1e6:.1f} MB); heaviest: "
        + ", ".join(f"{url} {size / 1e3:.0f} kB" for url, size in heaviest))


@pytest.mark.parametrize(("page", "width"), PAGE_WIDTHS)
def test_nothing_wider_than_the_page(page, width, reports):
    probe = reports(page, width).probe
    assert probe["pageWidth"] <= probe["viewport"] + 1, (
        f"{page} at {width} px scrolls sideways: {probe['pageWidth']} px wide.")
    assert not probe["wide"], f"{page} at {width} px, wider than the column: {probe['wide']}"
    assert not probe["clippedCode"], (
        f"{page} at {width} px, code or output with text behind a scrollbar: "
        f"{probe['clippedCode']}")
    if width >= WIDE:
        assert not probe["scrollingTables"], (
            f"{page} at {width} px, tables that need scrolling: {probe['scrollingTables']}")
        assert not probe["wrappedCode"], (
            f"{page} at {width} px, code cells with lines too long to show unwrapped (about 80 "
            f"characters fit): {probe['wrappedCode']}")


@pytest.mark.parametrize(("stem", "width"), CHAPTER_WIDTHS)
def test_figures_are_drawn_without_overlaps(stem, width, reports):
    expected = count_plotly_figures(executed_outputs(stem))
    page = chapter_page(stem)
    probe = reports(page, width).probe
    plots = probe["plots"]
    assert plots["drawn"] == plots["count"] >= expected, (
        f"{stem} at {width} px: {plots['drawn']} of {plots['count']} figures drawn, "
        f"{expected} in the executed notebook (was PLOTLY_RENDERER=notebook set?).")
    problems = []
    for figure in probe["figures"]:
        where = f"figure {figure['index'] + 1}"
        problems += [f"{where}: overlap {pair}" for pair in figure["overlaps"]]
        problems += [f"{where}: outside the figure: {item}" for item in figure["outside"]]
        problems += [f"{where}: toolbar over {title!r}" for title in figure["toolbarOverTitle"]]
        if figure["heatmapOverlaps"]:
            problems.append(f"{where}: {figure['heatmapOverlaps']} overlapping heatmap numbers")
        if figure["heatmapMinFont"] is not None and figure["heatmapMinFont"] < 8:
            problems.append(f"{where}: heatmap numbers at {figure['heatmapMinFont']} px")
    assert not problems, f"{stem} at {width} px:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("stem", CHAPTERS)
def test_widgets_are_shown_from_saved_state(stem, reports):
    expected = sum(WIDGET_VIEW in out.get("data", {}) for out in executed_outputs(stem))
    probe = reports(chapter_page(stem), WIDE).probe
    assert probe["staticWidgets"] == expected, (
        f"{stem}: {probe['staticWidgets']} widget panels on the page, {expected} widget views "
        "in the executed notebook.")


@pytest.mark.parametrize("stem", CHAPTERS)
def test_chapter_page_furniture(stem, reports):
    """Colab link, no traceback, the parameters cell shown, the time to run under the title."""
    page = chapter_page(stem)
    source = (HTML_DIR / page).read_text()
    assert COLAB_URL.format(f"{stem}.ipynb") in source
    assert TRACEBACK_TEXT not in source, f"{stem}: the page shows a traceback."
    errors = re.findall(r'class="output (?:error|traceback)[^"]*"', source)
    assert not errors, f"{stem}: the page shows error outputs {errors}."
    probe = reports(page, WIDE).probe
    assert probe["parametersShown"] is not False, f"{stem}: the parameters cell is folded."
    assert probe["runTime"] and "Time to run" in probe["runTime"], (
        f"{stem}: no 'time to run' line on the page.")
    assert probe["runTimeAfterTitle"], f"{stem}: the 'time to run' line is not under the title."


def test_zz_summary(reports, capsys):
    """Print page weights and timings (not asserted) and keep them in _build/pages/."""
    lines = [f"{'page':<44} {'width':>5} {'gzip MB':>8} {'load s':>7} {'plots':>5} "
             f"{'last plot s':>11}"]
    for (page, width), report in sorted(reports.cache.items()):
        plots = report.probe["plots"]
        flag = " (> 2 s)" if report.last_plot_ms > PLOT_TARGET_MS else ""
        lines.append(f"{page:<44} {width:>5} {report.total_gzip / 1e6:>8.3f} "
                     f"{report.load_ms / 1e3:>7.1f} {plots['count']:>5} "
                     f"{report.last_plot_ms / 1e3:>11.2f}{flag}")
    text = "\n".join(lines)
    (PAGES_DIR / "summary.txt").write_text(text + "\n")
    with capsys.disabled():
        print("\n" + text)
