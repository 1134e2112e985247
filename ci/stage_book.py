"""Lay out the book's source folder with the executed chapters in place of the stripped sources.

    python ci/stage_book.py --executed _build/executed --dest _build/book_src

The destination gets ``_config.yml``, ``_toc.yml``, ``book/`` and ``notebooks/`` (support files
from the sources, chapters from ``--executed``), so that Jupyter Book, which does not execute
anything (``execute_notebooks: "off"``), can only show outputs that papermill produced. Exit
status 1 when a chapter has no executed copy or a page named in ``_toc.yml`` is missing.

Each staged chapter (a copy: the executed notebooks that nbval compares stay as papermill wrote
them) is prepared for the page:

* the cell papermill injected after the ``parameters`` cell is removed (``remove-cell``); the
  ``parameters`` cell itself stays visible, as in the source, since the text invites readers
  to change it;
* a "time to run" line goes under the title, computed from papermill's record of the run
  (``metadata.papermill.duration``) and the device and thread count that the chapter printed
  with ``fedlib.print_config()``; ``--gpu-executed DIR`` adds the time of a GPU run of the
  same chapter where one was made;
* every widget view becomes static HTML drawn from the saved widget state
  (``static_widgets.py``): a static page cannot run the widgets' Python callbacks.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import yaml
from pipeline import NOTEBOOK_DIR, REPO_ROOT, chapter_notebooks, copy_support_files
from static_widgets import render_notebook_widgets

BOOK_FILES = ("_config.yml", "_toc.yml")
BOOK_DIRS = ("book",)
PAGE_SUFFIXES = (".md", ".ipynb")
INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"
RUN_TIME_TAG = "run-time"
# Lines of fedlib.print_config(): "device         cpu", "torch threads  1".
_DEVICE_LINE = re.compile(r"^device\s+(\S+)\s*$", re.M)
_THREADS_LINE = re.compile(r"^torch threads\s+(\d+)\s*$", re.M)


def toc_files(toc: dict) -> list[str]:
    """Every page of a ``jb-book`` table of contents, the root first, without suffix."""
    found = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({key: value for key, value in toc.items() if key != "root"})
    return [str(Path(name).with_suffix("")) if name.endswith(PAGE_SUFFIXES) else name
            for name in found]


def _source_text(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _printed_text(nb: dict) -> str:
    return "\n".join(
        _source_text({"source": out.get("text", "")})
        for cell in nb.get("cells", []) for out in cell.get("outputs", [])
        if out.get("output_type") == "stream")  # fmt: skip


def format_duration(seconds: float) -> str:
    """``42 s``, ``3.6 min``, ``14 min``, ``1.3 h``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = seconds / 60
    if minutes < 10:
        return f"{minutes:.1f} min"
    if minutes < 90:
        return f"{round(minutes)} min"
    return f"{minutes / 60:.1f} h"


def where_it_ran(nb: dict) -> str:
    """``one CPU thread``, ``4 CPU threads``, ``a GPU (cuda)``, from print_config's lines."""
    printed = _printed_text(nb)
    device = _DEVICE_LINE.search(printed)
    threads = _THREADS_LINE.search(printed)
    if device and not device.group(1).startswith("cpu"):
        return f"a GPU ({device.group(1)})"
    if threads:
        count = int(threads.group(1))
        return "one CPU thread" if count == 1 else f"{count} CPU threads"
    return "the CPU"


def run_time_line(nb: dict, gpu_nb: dict | None = None) -> str | None:
    """The markdown of the "time to run" line; None when papermill recorded no duration."""
    duration = nb.get("metadata", {}).get("papermill", {}).get("duration")
    if duration is None:
        return None
    text = (f"**Time to run:** about {format_duration(duration)} on {where_it_ran(nb)} "
            "with the parameters shown below")
    gpu_duration = (gpu_nb or {}).get("metadata", {}).get("papermill", {}).get("duration")
    if gpu_duration is not None:
        text += f", about {format_duration(gpu_duration)} on {where_it_ran(gpu_nb)}"
    text += " (measured by papermill when this page was built)."
    return f"```{{container}} chapter-run-time\n{text}\n```"


def insert_after_title(nb: dict, markdown: str) -> bool:
    """Put a markdown cell holding ``markdown`` right after the notebook's ``# title`` line,
    splitting the title's cell if more text follows the title in it. False if no title."""
    cells = nb.get("cells", [])
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "markdown":
            continue
        lines = _source_text(cell).splitlines(keepends=True)
        for line_no, line in enumerate(lines):
            if line.startswith("# "):
                head, rest = "".join(lines[:line_no + 1]), "".join(lines[line_no + 1:])
                new = [dict(cell, source=head),
                       {"cell_type": "markdown", "metadata": {"tags": [RUN_TIME_TAG]},
                        "source": markdown}]  # fmt: skip
                if rest.strip():
                    new.append({"cell_type": "markdown", "metadata": {},
                                "source": rest.lstrip("\n")})
                for extra in new[1:]:
                    if "id" in cell:
                        extra["id"] = f"{cell['id']}-{len(cells)}-{new.index(extra)}"
                cells[index:index + 1] = new
                return True
    return False


def set_parameter_tags(nb: dict, source_tags: list[str] | None) -> None:
    """``remove-cell`` on papermill's injected cell; the ``parameters`` cell as in the source
    (an earlier run may have folded it with ``hide-input``)."""
    for cell in nb.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if INJECTED_TAG in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        elif PARAMETERS_TAG in tags and source_tags is not None:
            tags[:] = list(source_tags)


def _parameter_tags(source: Path) -> list[str] | None:
    nb = json.loads(source.read_text())
    for cell in nb.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if PARAMETERS_TAG in tags:
            return list(tags)
    return None


def prepare_chapter(executed_copy: Path, source: Path, dest: Path,
                    gpu_copy: Path | None = None) -> list[str]:
    """Write the book's version of one executed chapter to ``dest``; return problems."""
    nb = json.loads(executed_copy.read_text())
    problems = []
    set_parameter_tags(nb, _parameter_tags(source))
    gpu_nb = json.loads(gpu_copy.read_text()) if gpu_copy and gpu_copy.is_file() else None
    line = run_time_line(nb, gpu_nb)
    if line is None:
        problems.append(f"{executed_copy.name}: no papermill duration in its metadata")
    elif not insert_after_title(nb, line):
        problems.append(f"{executed_copy.name}: no '# title' line to put the time to run under")
    unknown = render_notebook_widgets(nb)
    if unknown:
        problems.append(f"{executed_copy.name}: widgets without a static form in "
                        f"ci/static_widgets.py: {', '.join(unknown)}")
    dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return problems


def stage(executed: Path, dest: Path, root: Path = REPO_ROOT,
          gpu_executed: Path | None = None) -> list[str]:
    """Build the source folder at ``dest``; return the problems found (empty when all is well)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in BOOK_FILES:
        shutil.copy2(root / name, dest / name)
    for name in BOOK_DIRS:
        shutil.copytree(root / name, dest / name)
    notebook_dest = dest / NOTEBOOK_DIR
    notebook_dest.mkdir()
    copy_support_files(root / NOTEBOOK_DIR, notebook_dest)

    problems = []
    for chapter in chapter_notebooks(root):
        executed_copy = executed / chapter.name
        if executed_copy.is_file():
            gpu_copy = gpu_executed / chapter.name if gpu_executed else None
            problems += prepare_chapter(executed_copy, chapter, notebook_dest / chapter.name,
                                        gpu_copy)
        else:
            problems.append(f"{chapter.name} has no executed copy in {executed} "
                            "(run `make execute`)")
    toc = yaml.safe_load((dest / "_toc.yml").read_text())
    for page in toc_files(toc):
        if not any((dest / f"{page}{suffix}").is_file() for suffix in PAGE_SUFFIXES):
            problems.append(f"_toc.yml lists {page!r}, which is neither {page}.md nor "
                            f"{page}.ipynb")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executed", type=Path, required=True)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--gpu-executed", type=Path, default=None,
                        help="executed copies from a GPU run, for the time-to-run line")
    args = parser.parse_args(argv)
    gpu = args.gpu_executed.resolve() if args.gpu_executed else None
    problems = stage(args.executed.resolve(), args.dest.resolve(), gpu_executed=gpu)
    for problem in problems:
        print(f"stage_book: {problem}", file=sys.stderr)
    if not problems:
        print(f"stage_book: book sources staged in {args.dest}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
