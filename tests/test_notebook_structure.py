"""The chapter sources follow the book's rules (``make structure``; no kernel needed).

Each ``notebooks/NN_topic.ipynb``: committed without outputs; kernel ``python3``; first code cell
a guarded install of fedlib (a no-op outside Colab); exactly one ``parameters`` cell of plain
literal assignments (papermill overrides them); no literal ``cuda`` (``fedlib.device()`` picks
the device at run time); widget cells tagged ``nbval-ignore-output``; listed in ``_toc.yml``;
a smoke parameter file ``ci/smoke/NN_topic.yaml`` naming only real parameters; a Colab link in
the README.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

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
