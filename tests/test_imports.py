"""No import circle in ``fedlib``: a static graph of the package's imports of itself.

Every module of the package is parsed with :mod:`ast`; every ``import`` and ``from ... import``
counts, at module level and inside functions and classes alike (a lazy import only hides a
circle, it does not remove it), except those under ``if TYPE_CHECKING:``, which never run.
An edge ``A -> B`` means that importing ``A`` (or calling into it) imports ``B``:

* ``import fedlib.x.y`` and ``from fedlib.x.y import name`` give ``A -> fedlib.x.y``;
* ``from fedlib.x import y`` gives ``A -> fedlib.x.y`` when ``y`` is a module, else
  ``A -> fedlib.x`` (a name defined by the package's ``__init__``);
* importing ``fedlib.x.y`` also runs the ``__init__`` of every package on the way that does not
  contain ``A`` (those that contain ``A`` are already imported when ``A`` runs), so ``A`` gets an
  edge to each of those packages as well.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import fedlib

PACKAGE = "fedlib"
PACKAGE_DIR = Path(fedlib.__file__).parent


def package_modules(package_dir: Path = PACKAGE_DIR, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted name -> source file of every module of the package (``__init__`` = the package)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every Import / ImportFrom node, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that module ``name`` (source ``path``) imports, see module doc."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            if node.level:  # relative: from the module's own package, one level up per extra dot
                here = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for target in names:
            while target and target not in modules:  # "import fedlib.x.y as z", attributes
                target = target.rpartition(".")[0]
            if not target or target == name:
                continue
            targets.add(target)
            own = set(_ancestors(name)) | ({name} if is_package else set())
            targets.update(p for p in _ancestors(target) if p not in own and p in modules)
    return targets


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    modules = package_modules() if modules is None else modules
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def import_circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components that hold a cycle (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    components.append(component)
    return sorted(components, key=min)


def shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle ``[a, ..., a]`` through the first module of a circle (breadth first)."""
    start = min(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if child not in parent:
                    parent[child] = node
                    following.append(child)
        frontier = following
    raise ValueError(f"no cycle through {start!r}")


def describe(graph: dict[str, set[str]], component: set[str]) -> str:
    line = " -> ".join(shortest_cycle(graph, component))
    if len(component) > 2:
        line += f"  (the circle holds {', '.join(sorted(component))})"
    return line


def part_of(module: str) -> str:
    """The subpackage a module belongs to (``fedlib.data.real.busi`` -> ``fedlib.data``), or
    ``"fedlib"`` for the package's ``__init__`` and its top-level modules."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE_DIR / parts[1]).is_dir()):
        return ".".join(parts[:2])
    return PACKAGE


#: Circles that are known and reported, with why they exist; each part of the package is
#: checked for every other circle. Remove an entry once its circle is gone.
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


# ----------------------------------------------------------------------------- the checker


def _graph_of(files: dict[str, str], tmp_path: Path) -> dict[str, set[str]]:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(package_modules(tmp_path / "pkg", "pkg"))


def test_graph_resolves_every_import_form(tmp_path):
    graph = _graph_of(
        {
            "__init__.py": "",
            "a.py": "import pkg.sub.b\nfrom pkg.sub import c\nfrom .sub.b import name\n",
            "sub/__init__.py": "from pkg.sub.b import thing\n",
            "sub/b.py": "def f():\n    from . import c\n    from .. import a\n",
            "sub/c.py": "from pkg.sub import thing\nimport numpy\n",
            "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
        },
        tmp_path,
    )
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.sub", "pkg.sub.b", "pkg.sub.c"},  # + the package's __init__ on the way
        "pkg.d": set(),  # TYPE_CHECKING imports never run
        "pkg.sub": {"pkg.sub.b"},
        "pkg.sub.b": {"pkg.sub.c", "pkg.a"},  # function-level imports count
        "pkg.sub.c": {"pkg.sub"},  # a name from the package's own __init__
    }


def test_circles_are_found_and_printed_shortest_first():
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"d"}, "e": {"a"}, "f": set()}
    circles = import_circles(graph)
    assert circles == [{"a", "b", "c"}, {"d"}]
    assert [shortest_cycle(graph, c) for c in circles] == [["a", "b", "a"], ["d", "d"]]
    assert describe(graph, circles[0]) == "a -> b -> a  (the circle holds a, b, c)"
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_a_lazy_circle_is_a_circle(tmp_path):
    graph = _graph_of(
        {
            "__init__.py": "",
            "seg.py": "def view():\n    from pkg.bus import bus\n",
            "bus.py": "from pkg.seg import boxes\n",
        },
        tmp_path,
    )
    assert import_circles(graph) == [{"pkg.bus", "pkg.seg"}]


# ----------------------------------------------------------------------------- fedlib itself


GRAPH = import_graph()
PARTS = sorted({part_of(m) for m in GRAPH})


def test_every_module_is_parsed():
    assert {"fedlib", "fedlib.data", "fedlib.data.segmentation", "fedlib.data.real.busi"} <= set(
        GRAPH
    )
    assert "fedlib.data.base" in GRAPH["fedlib.data.segmentation"]
    assert {"fedlib", "fedlib.core", "fedlib.data", "fedlib.methods"} <= set(PARTS)
    assert part_of("fedlib.data.real.busi") == part_of("fedlib.data") == "fedlib.data"
    assert part_of("fedlib.losses") == part_of("fedlib") == "fedlib"


@pytest.mark.parametrize("part", PARTS)
def test_no_import_circle(part):
    """No circle touches this part of fedlib, other than the reported :data:`KNOWN_CIRCLES`."""
    circles = [
        c
        for c in import_circles(GRAPH)
        if any(part_of(m) == part for m in c) and frozenset(c) not in KNOWN_CIRCLES
    ]
    assert not circles, "import circles:\n" + "\n".join(describe(GRAPH, c) for c in circles)


def test_the_data_package_has_no_circle_at_all():
    circles = [c for c in import_circles(GRAPH) if any(part_of(m) == "fedlib.data" for m in c)]
    assert not circles, "\n".join(describe(GRAPH, c) for c in circles)


def test_data_helpers_sit_below_the_generators():
    """The shared helpers import nothing that imports them back: geometry is a leaf of
    fedlib.data, the render helper needs only geometry, the recipes only count tables."""

    def data_imports(module):
        return {m for m in GRAPH[module] if part_of(m) == "fedlib.data"}

    assert data_imports("fedlib.data._geometry") == set()
    assert data_imports("fedlib.data._render") == {"fedlib.data._geometry"}
    assert data_imports("fedlib.data.recipes") <= {
        "fedlib.data.templates", "fedlib.data.partitions"
    }  # fmt: skip
    for generator in ("synthich", "synthbus", "synthderm"):
        assert "fedlib.data.segmentation" not in data_imports(f"fedlib.data.{generator}")


PUBLIC_NAMES = {
    "fedlib.data": (
        "DATASETS ArrayDataset FederatedDataset SegmentationDataset data_root dataset_labels "
        "dirichlet_partition federate load_dataset longtail_counts longtail_subsample "
        "natural_partition partition_stats pathological_partition render_synthbus "
        "render_synthderm render_synthich scale_template segmentation_view site_template "
        "synthbus synthderm synthich"
    ),
    "fedlib.data.segmentation": (
        "HAM10000_SOURCES SUPERVISION_LEVELS SUPERVISION_SETTINGS SegmentationDataset box_masks "
        "boxes_with_margin default_box_margin ham10000_counts image_level_targets "
        "segmentation_view tight_boxes"
    ),
    "fedlib.data.synthbus": (
        "BUS_CLASSES BUS_CLASSES_WITH_NORMAL BUS_SITES BUS_TEST_COUNTS BUS_TRAIN_COUNTS "
        "BUSI_NORMAL_COUNT BUSSiteStyle bus_counts bus_site_style render_synthbus synthbus NORMAL"
    ),
    "fedlib.data.synthich": "ICHSiteStyle ich_site_style render_synthich synthich gaussian_blur",
    "fedlib.data.synthderm": "masks_to_boxes render_synthderm synthderm render_rate",
}


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_public_names_stay_where_they_were(module):
    """Moving helpers into leaf modules kept every name importable from its old place."""
    imported = importlib.import_module(module)
    missing = [n for n in PUBLIC_NAMES[module].split() if not hasattr(imported, n)]
    assert not missing, f"{module} lost {missing}"
