"""Lay out the book's source folder with the executed chapters in place of the stripped sources.

    python ci/stage_book.py --executed _build/executed --dest _build/book_src

The destination gets ``_config.yml``, ``_toc.yml``, ``book/`` and ``notebooks/`` (support files
from the sources, chapters from ``--executed``), so that Jupyter Book, which does not execute
anything (``execute_notebooks: "off"``), can only show outputs that papermill produced. Exit
status 1 when a chapter has no executed copy or a page named in ``_toc.yml`` is missing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml
from pipeline import NOTEBOOK_DIR, REPO_ROOT, chapter_notebooks, copy_support_files

BOOK_FILES = ("_config.yml", "_toc.yml")
BOOK_DIRS = ("book",)
PAGE_SUFFIXES = (".md", ".ipynb")


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


def stage(executed: Path, dest: Path, root: Path = REPO_ROOT) -> list[str]:
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
            shutil.copy2(executed_copy, notebook_dest / chapter.name)
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
    args = parser.parse_args(argv)
    problems = stage(args.executed.resolve(), args.dest.resolve())
    for problem in problems:
        print(f"stage_book: {problem}", file=sys.stderr)
    if not problems:
        print(f"stage_book: book sources staged in {args.dest}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
