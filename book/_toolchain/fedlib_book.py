"""Sphinx extension of the fedlib book: pages that work offline and stay light.

``_config.yml`` loads it (``sphinx: local_extensions``). On every HTML page it

* removes the copy of plotly.js that plotly's ``notebook`` renderer inlines into the first figure
  of each notebook (4.8 MB a page) and the MathJax loaders from a CDN that it adds to every
  figure; a page that draws figures then loads plotly.js once from the book's own ``_static``
  folder, followed by ``book-figures.js`` (responsive figures, see that file);
* picks the smallest plotly.js bundle that draws the page: the ``cartesian`` partial bundle
  (``static/vendor``, same plotly.js release, a third of the size) when every trace of the page
  is of a type it holds, else the full bundle shipped in the plotly package's ``package_data``;
* drops repeated inline scripts (JB1 registers some extensions' configuration twice, which made
  ``const THEBE_JS_URL`` a SyntaxError on every page);

and once the build is done it

* copies MathJax 3 from the ``mathjax`` Python package (``django-static-mathjax``, pinned in
  ``requirements-book.txt``) into ``_static/mathjax`` for the local ``mathjax_path`` set in
  ``_config.yml``, so formulas render without a network;
* cuts the theme's Font Awesome webfonts (fa-solid 156 kB, fa-brands 118 kB gzipped, loaded by
  every page) down to the icons the book uses (``fontTools``): the icons named by ``fa-*``
  classes in the built pages and scripts and those the theme's stylesheets use directly.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
CARTESIAN_BUNDLE = "vendor/plotly-cartesian.min.js"
FULL_BUNDLE = "vendor/plotly.min.js"
FIGURES_JS = "book-figures.js"
# The trace modules of plotly.js's cartesian partial bundle (its README lists the same).
CARTESIAN_TRACES = frozenset({
    "bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour",
    "image", "pie", "scatter", "scatterternary", "violin",
})  # fmt: skip
PRIVATE_USE = re.compile("[\ue000-\uf8ff]")
_ICON_RULE = re.compile(r"([^{}]+)\{[^{}]*?content:\s*\"\\([0-9a-fA-F]{4})\"")
_ICON_CLASS = re.compile(r"\bfa-[a-z0-9][a-z0-9-]*")
# Parts of MathJax's es5 folder that the chosen component loads (fonts, TeX packages on demand,
# the menu and its accessibility tools); the other combined components are not needed.
MATHJAX_PARTS = ("a11y", "adaptors", "input", "output", "sre", "ui")

_INLINE_PLOTLY = re.compile(r"<script[^>]*>\s*/\*\*\s*\*?\s*plotly\.js v[\d.]+.*?</script>", re.S)
_CDN_SCRIPT = re.compile(
    r"<script[^>]*\bsrc=[\"']https?://[^\"']*(?:mathjax|plot\.ly|plotly)[^\"']*[\"'][^>]*>"
    r"\s*</script>|<script type=\"module\">\s*import\s+\"https?://[^\"]*\"\s*</script>",
    re.I,
)
_MATHJAX2_CONFIG = re.compile(r"<script[^>]*>\s*if \(window\.MathJax && window\.MathJax\.Hub"
                              r"[^<]*</script>")
_NEW_PLOT = "Plotly.newPlot("


def strip_plotly_loaders(html: str) -> str:
    """``html`` without inlined plotly.js bundles, CDN loaders of plotly.js or MathJax, and the
    MathJax 2 configuration snippet that plotly adds to each figure."""
    html = _INLINE_PLOTLY.sub("", html)
    html = _CDN_SCRIPT.sub("", html)
    return _MATHJAX2_CONFIG.sub("", html)


def plot_trace_types(html: str) -> set[str] | None:
    """The trace types drawn by every ``Plotly.newPlot(id, data, ...)`` call in ``html``.

    A trace without ``type`` is a scatter trace (plotly's default). None when a call's data
    cannot be read as JSON (the caller then has to assume any type).
    """
    decoder = json.JSONDecoder()
    types: set[str] = set()
    start = html.find(_NEW_PLOT)
    while start >= 0:
        pos = start + len(_NEW_PLOT)
        try:
            for _ in range(2):  # the div id, then the data array
                while html[pos] in " \t\r\n,":
                    pos += 1
                value, pos = decoder.raw_decode(html, pos)
        except (ValueError, IndexError):
            return None
        if not isinstance(value, list):
            return None
        types.update(trace.get("type", "scatter") for trace in value if isinstance(trace, dict))
        start = html.find(_NEW_PLOT, pos)
    return types


def plotly_bundle(types: set[str] | None) -> str:
    return CARTESIAN_BUNDLE if types is not None and types <= CARTESIAN_TRACES else FULL_BUNDLE


def _bundle_version(path: Path) -> str | None:
    match = re.search(r"plotly\.js \([^)]*\) v([\d.]+)|plotly\.js v([\d.]+)",
                      path.read_text(encoding="utf-8", errors="replace")[:400])
    return next((group for group in match.groups() if group), None) if match else None


def _unique_scripts(scripts: list) -> list:
    """Scripts in order, each (file and attributes, or inline body) once."""
    seen, kept = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        key = (str(getattr(script, "filename", script) or ""), tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    return kept


def on_page(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    body = context.get("body")
    if isinstance(body, str) and "plotly" in body.lower():
        body = strip_plotly_loaders(body)
        context["body"] = body
        if _NEW_PLOT in body:
            bundle = plotly_bundle(plot_trace_types(body))
            app.env.fedlib_full_plotly = (getattr(app.env, "fedlib_full_plotly", False)
                                          or bundle == FULL_BUNDLE)
            # page-specific (Sphinx resets the list after each page); no defer: the figures'
            # inline scripts in the body call Plotly as soon as they are parsed
            app.add_js_file(bundle)
            app.add_js_file(FIGURES_JS)
    if "script_files" in context:
        context["script_files"][:] = _unique_scripts(context["script_files"])


def check_vendored_plotly(app: Sphinx) -> None:
    """The cartesian bundle must be the plotly.js release that the plotly package ships."""
    from plotly.offline import get_plotlyjs_version

    expected = get_plotlyjs_version()
    found = _bundle_version(STATIC / CARTESIAN_BUNDLE)
    if found != expected:
        logger.warning(
            "fedlib_book: %s is plotly.js %s but the installed plotly package uses %s; "
            "refresh it (see book/_toolchain/SOURCES.txt).", CARTESIAN_BUNDLE, found, expected)


def copy_assets(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    subset_icon_fonts(Path(app.outdir))
    static = Path(app.outdir) / "_static"
    if getattr(app.env, "fedlib_full_plotly", False):
        import plotly

        (static / "vendor").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
                        static / FULL_BUNDLE)
    path = app.config.mathjax_path
    if path and "://" not in path and path.startswith("mathjax/"):
        import mathjax  # the django-static-mathjax package: MathJax's es5 build

        source = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
        component = source / path.removeprefix("mathjax/")
        if not component.is_file():
            logger.warning("fedlib_book: mathjax_path %r is not a file of %s", path, source)
            return
        dest = static / "mathjax"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(component, dest / component.name)
        for part in MATHJAX_PARTS:
            shutil.copytree(source / part, dest / part, dirs_exist_ok=True)
        shutil.copyfile(source.parent / "LICENSE", dest / "LICENSE")


def used_icon_codepoints(static: Path, pages: list[Path]) -> set[int]:
    """Code points of the Font Awesome icons that the built site can show."""
    names: set[str] = set()
    for path in [*pages, *static.rglob("scripts/*.js")]:
        names.update(_ICON_CLASS.findall(path.read_text(encoding="utf-8", errors="replace")))
    points: set[int] = set()
    for css in static.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        points.update(ord(char) for char in PRIVATE_USE.findall(text))
        for selectors, code in _ICON_RULE.findall(text):
            classes = {sel.strip().split(":")[0].lstrip(".") for sel in selectors.split(",")}
            if classes & names:
                points.add(int(code, 16))
    return points


def subset_icon_fonts(outdir: Path) -> None:
    from fontTools import subset

    static = outdir / "_static"
    fonts = sorted(static.rglob("webfonts/fa-*.woff2"))
    if not fonts:
        return
    points = used_icon_codepoints(static, sorted(outdir.rglob("*.html")))
    options = subset.Options()
    options.flavor = "woff2"
    for path in fonts:
        font = subset.load_font(str(path), options)
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=points)
        subsetter.subset(font)
        subset.save_font(font, str(path), options)


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", check_vendored_plotly)
    app.connect("html-page-context", on_page)
    app.connect("build-finished", copy_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": False}
