"""The chapter sources follow the book's rules (``make structure``; no kernel needed).

Each ``notebooks/NN_topic.ipynb``: committed without outputs; kernel ``python3``; first code cell
a guarded install of fedlib (a no-op outside Colab); exactly one ``parameters`` cell of plain
literal assignments (papermill overrides them); no literal ``cuda`` (``fedlib.device()`` picks
the device at run time); widget cells tagged ``nbval-ignore-output``; listed in ``_toc.yml``;
a smoke parameter file ``ci/smoke/NN_topic.yaml`` naming only real parameters; a Colab link in
the README; every parameter visible to ``papermill --help-notebook``; code lines that fit a book
page (``PAGE_WIDTH``); and every "write it yourself" function ``my_*`` a stub whose check cell
runs the reader's version or the folded solution and says which ran.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from papermill.translators import PythonTranslator

from fedlib.report import PAGE_WIDTH

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ci"))
from pipeline import CHAPTER_GLOB, COLAB_URL, chapter_notebooks  # noqa: E402
from stage_book import toc_files  # noqa: E402

CHAPTERS = chapter_notebooks(ROOT)
SMOKE_DIR = ROOT / "ci" / "smoke"
INSTALL_SPEC = '"fedlib @ git+https://github.com/fedlib/fedlib-book"'
# Widgets whose Output area is filled by a callback: papermill stores that output in the widget
# state, while nbval sees it as unexpected stdout (toolchain §6).
WIDGET_CALL = re.compile(
    r"@\s*(?:\w+\.)*interact(?:_manual)?\b"
    r"|\b(?:interact|interact_manual|interactive|interactive_output|Output)\s*\("
)
NBVAL_IGNORE_TAG = "nbval-ignore-output"


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def parameter_names(cell: nbformat.NotebookNode) -> list[str]:
    """Names set by a ``parameters`` cell; every statement must be ``NAME = literal``."""
    names = []
    for node in ast.parse(cell.source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if (not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None
                or not isinstance(target, ast.Name)
                or (isinstance(node, ast.Assign) and len(node.targets) != 1)):
            raise ValueError(f"line {node.lineno} is not `NAME = literal`")
        ast.literal_eval(node.value)  # ValueError for anything but a literal
        names.append(target.id)
    return names


def chapter_id(path: Path) -> str:
    return path.stem


@pytest.fixture(params=CHAPTERS, ids=chapter_id)
def chapter(request) -> Path:
    return request.param


def test_notebook_folder_holds_only_chapters():
    """A notebook whose name escapes ``NN_topic.ipynb`` would escape CI as well."""
    strays = [p.name for p in (ROOT / "notebooks").glob("*.ipynb")
              if not p.match(CHAPTER_GLOB)] if (ROOT / "notebooks").is_dir() else []
    assert not strays, f"Name notebooks NN_topic.ipynb (or move them out): {strays}"


def test_valid_notebook_format(chapter):
    nbformat.validate(read(chapter))


def test_no_stored_outputs(chapter):
    stored = [i for i, cell in enumerate(read(chapter).cells)
              if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not stored, (f"{chapter.name}: cells {stored} keep outputs or execution counts; "
                        "commit notebooks stripped (CI executes them).")


def test_kernel_is_python3(chapter):
    kernelspec = read(chapter).metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3", f"{chapter.name}: kernelspec {kernelspec}"


def test_first_code_cell_installs_fedlib_only_where_missing(chapter):
    cells = code_cells(read(chapter))
    assert cells, f"{chapter.name} has no code cell."
    setup = cells[0].source
    install_lines = [line for line in setup.splitlines() if "pip install" in line]
    assert install_lines and all(INSTALL_SPEC in line for line in install_lines), (
        f"{chapter.name}: the first code cell must run %pip install -q {INSTALL_SPEC}.")
    assert all(line.startswith((" ", "\t")) for line in install_lines), (
        f"{chapter.name}: the install must sit under an `if` (only in Colab / where fedlib is "
        "missing), so that it is a no-op locally and in CI.")
    assert 'find_spec("fedlib")' in setup or "except ImportError" in setup, (
        f"{chapter.name}: the setup cell must check that fedlib is missing before installing.")
    later = [i for i, cell in enumerate(cells[1:], start=2) if "pip install" in cell.source]
    assert not later, f"{chapter.name}: only the first code cell may install; code cells {later}."


def test_exactly_one_parameters_cell(chapter):
    tagged = [cell for cell in read(chapter).cells if "parameters" in tags(cell)]
    assert len(tagged) == 1, f"{chapter.name}: {len(tagged)} cells tagged 'parameters', not 1."
    assert tagged[0].cell_type == "code"
    try:
        names = parameter_names(tagged[0])
    except (SyntaxError, ValueError) as error:
        pytest.fail(f"{chapter.name}: the parameters cell must hold only `NAME = literal` "
                    f"lines ({error}).")
    assert names, f"{chapter.name}: the parameters cell sets nothing."


def test_no_literal_cuda(chapter):
    offending = [i for i, cell in enumerate(code_cells(read(chapter)), start=1)
                 if "cuda" in cell.source]
    assert not offending, (f"{chapter.name}: code cells {offending} mention 'cuda'; pick the "
                           "device at run time with fedlib.device().")


def test_widget_cells_skip_output_comparison(chapter):
    untagged = []
    for i, cell in enumerate(code_cells(read(chapter)), start=1):
        code = "\n".join(line for line in cell.source.splitlines()
                         if not line.lstrip().startswith(("import ", "from ", "#")))
        if (WIDGET_CALL.search(code) and NBVAL_IGNORE_TAG not in tags(cell)
                and "# NBVAL_IGNORE_OUTPUT" not in cell.source):
            untagged.append(i)
    assert not untagged, (
        f"{chapter.name}: code cells {untagged} build widgets with an Output area "
        f"(interact, Output, ...): tag them '{NBVAL_IGNORE_TAG}', or nbval reports the callback's "
        "output as unexpected stdout. Keep metrics that nbval should compare in other cells.")


def test_listed_in_toc(chapter):
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert f"notebooks/{chapter.stem}" in toc_files(toc), f"_toc.yml does not list {chapter.name}"


def test_smoke_parameters_name_real_parameters(chapter):
    smoke = SMOKE_DIR / f"{chapter.stem}.yaml"
    assert smoke.is_file(), f"{chapter.name}: no smoke parameters {smoke.relative_to(ROOT)}"
    values = yaml.safe_load(smoke.read_text())
    assert isinstance(values, dict) and values, f"{smoke.name}: expected a non-empty mapping."
    cell = next(c for c in read(chapter).cells if "parameters" in tags(c))
    unknown = sorted(set(values) - set(parameter_names(cell)))
    assert not unknown, (f"{smoke.name} sets {unknown}, which the parameters cell of "
                         f"{chapter.name} does not define (papermill would only warn).")


def test_readme_links_chapter_to_colab(chapter):
    readme = (ROOT / "README.md").read_text()
    assert COLAB_URL.format(chapter.name) in readme, f"README.md: no Colab link to {chapter.name}"


def test_toc_pages_exist():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc.get("format") == "jb-book" and toc.get("root") == "book/intro"
    missing = [page for page in toc_files(toc)
               if not any((ROOT / f"{page}{suffix}").is_file() for suffix in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"


def test_every_smoke_file_belongs_to_a_chapter():
    stems = {path.stem for path in CHAPTERS}
    orphans = sorted(p.name for p in SMOKE_DIR.glob("*.yaml") if p.stem not in stems)
    assert not orphans, f"ci/smoke has parameter files for no chapter: {orphans}"


def test_papermill_sees_every_parameter(chapter):
    """papermill drops a parameter whose line it cannot parse (e.g. a comment holding '='):
    ``--help-notebook`` would not list it and ``-p`` would only warn about it."""
    cell = next(c for c in read(chapter).cells if "parameters" in tags(c))
    seen = [parameter.name for parameter in PythonTranslator.inspect(cell)]
    missing = [name for name in parameter_names(cell) if name not in seen]
    assert not missing, (f"{chapter.name}: papermill cannot parse the parameter lines of "
                         f"{missing}; keep each on one line with one '=' (none in the comment).")


def test_code_fits_the_page(chapter):
    long = [(i, len(line)) for i, cell in enumerate(code_cells(read(chapter)), start=1)
            for line in cell.source.splitlines() if len(line) > PAGE_WIDTH]
    assert not long, (f"{chapter.name}: code lines longer than {PAGE_WIDTH} characters are cut "
                      f"off on the book's page; (code cell, length): {long}")


def _is_stub(function: ast.FunctionDef) -> bool:
    """A body of only a docstring, comments and ``...``/``pass`` or ``raise
    NotImplementedError``."""
    body = list(function.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if len(body) != 1:
        return False
    statement = body[0]
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return statement.value.value is Ellipsis
    if isinstance(statement, ast.Raise) and statement.exc is not None:
        raised = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
        return isinstance(raised, ast.Name) and raised.id == "NotImplementedError"
    return False


def _defined_functions(source: str) -> dict[str, ast.FunctionDef]:
    try:
        tree = ast.parse("\n".join(line for line in source.splitlines()
                                   if not line.lstrip().startswith(("%", "!"))))
    except SyntaxError:
        return {}
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _check_calls(source: str) -> list[ast.Call]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "check_yours"]


def test_write_it_yourself_cells_are_stubs_with_a_check(chapter):
    """Each ``def my_*`` is a stub for the reader (with the formula in a comment); a later cell
    calls ``check_yours(my_*, solution, ...)``, which runs the reader's version once written and
    the solution (defined in a folded ``hide-input`` cell) while it is a stub, and says which."""
    cells = code_cells(read(chapter))
    for i, cell in enumerate(cells):
        for name, function in _defined_functions(cell.source).items():
            if not name.startswith("my_"):
                continue
            where = f"{chapter.name}, code cell {i + 1}, {name}"
            assert _is_stub(function), (
                f"{where}: a write-it-yourself function must be a stub (raise "
                "NotImplementedError or `...`), with the solution folded in another cell.")
            assert "#" in cell.source, f"{where}: give the formula in a comment in the stub."
            checks = [(j, call) for j, later in enumerate(cells[i + 1:], start=i + 1)
                      for call in _check_calls(later.source)
                      if call.args and getattr(call.args[0], "id", None) == name]
            assert checks, (f"{where}: no later cell calls check_yours({name}, solution, ...) "
                            "to run and check the reader's version.")
            j, call = checks[0]
            solution = getattr(call.args[1], "id", None) if len(call.args) > 1 else None
            folded = [c for c in cells if solution in _defined_functions(c.source)]
            assert folded and all("hide-input" in tags(c) for c in folded), (
                f"{where}: the fallback solution {solution!r} must be defined in a code cell "
                "tagged 'hide-input' (folded in the book).")
            assert "print" in cells[j].source or "say(" in cells[j].source, (
                f"{chapter.name}, code cell {j + 1}: print check_yours(...).message, which says "
                "whose version ran.")


def page_title(path: Path) -> str:
    """A notebook's H1 without its chapter number ("1. " or "Appendix: ")."""
    first = read(path).cells[0].source.splitlines()[0]
    title = first.removeprefix("# ").strip()
    return re.sub(r"^(\d+\.\s+|Appendix:\s+)", "", title)


def test_intro_links_chapters_by_their_page_titles():
    """The table of chapters on the intro page names each chapter as its page does."""
    intro = (ROOT / "book" / "intro.md").read_text()
    links = re.findall(r"\[([^\]]+)\]\(\.\./notebooks/([^)]+)\.ipynb\)", intro)
    assert links, "book/intro.md links no chapter."
    wrong = [(text, stem, page_title(ROOT / "notebooks" / f"{stem}.ipynb"))
             for text, stem in links
             if text.casefold() != page_title(ROOT / "notebooks" / f"{stem}.ipynb").casefold()]
    assert not wrong, f"book/intro.md: (link text, chapter, page title) differ: {wrong}"


def test_setup_page_shows_the_install_cell(chapter):
    """book/setup.md shows the chapters' real first cell (its code lines, comments aside)."""
    setup = (ROOT / "book" / "setup.md").read_text()
    lines = [line for line in code_cells(read(chapter))[0].source.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    missing = [line for line in lines if f"\n{line}\n" not in setup]
    assert not missing, (f"book/setup.md does not show {chapter.name}'s install cell; lines "
                         f"missing: {missing}")
