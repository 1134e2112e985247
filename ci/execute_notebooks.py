"""Execute the chapter notebooks with papermill, a few at a time, and tag the copies for the book.

Book mode (the defaults of each chapter's ``parameters`` cell; these copies become the book)::

    python ci/execute_notebooks.py --out _build/executed

Smoke mode (each chapter with the values in ``ci/smoke/<notebook stem>.yaml``)::

    python ci/execute_notebooks.py --out _build/smoke --params-dir ci/smoke

Each notebook runs in its own papermill process (``run_papermill.py``: papermill with a fix
for a hang on widget cells) and writes ``<out>/<stem>.ipynb`` (kept on failure: it holds the
traceback), ``<out>/<stem>.stderr.txt`` (what the notebook wrote to stderr, if anything) and
``<out>/<stem>.log`` (papermill's log with every cell's output). The kernel runs in
``notebooks/`` with one CPU thread and ``PLOTLY_RENDERER=notebook`` unless the caller (the
Makefile) set other values. Exit status 1 when any notebook fails. The copies stay as papermill
wrote them (nbval compares them); ``stage_book.py`` prepares staged copies for the book.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from pipeline import (
    NOTEBOOK_DIR,
    REPO_ROOT,
    Job,
    chapter_notebooks,
    copy_support_files,
    default_workers,
    run_jobs,
)

# Plots as self-contained HTML (the book drops plotly's JSON output); one thread for reproducible
# runs. The Makefile exports the same values; these defaults cover a direct call of this script.
RUN_ENVIRONMENT = {
    "PLOTLY_RENDERER": "notebook",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
}


def papermill_job(notebook: Path, out_dir: Path, params_dir: Path | None, timeout: int) -> Job:
    stem = notebook.stem
    argv = [
        sys.executable, str(Path(__file__).with_name("run_papermill.py")),
        str(notebook), str(out_dir / f"{stem}.ipynb"),
        "--kernel", "python3",
        "--cwd", str(REPO_ROOT / NOTEBOOK_DIR),
        "--execution-timeout", str(timeout),
        "--log-output", "--no-progress-bar",
        "--stderr-file", str(out_dir / f"{stem}.stderr.txt"),
    ]  # fmt: skip
    if params_dir is not None:
        params = params_dir / f"{stem}.yaml"
        if not params.is_file():
            raise SystemExit(f"execute_notebooks: no smoke parameters for {notebook.name}: "
                             f"expected {params}.")
        argv += ["--parameters_file", str(params)]
    return Job(stem, argv, out_dir / f"{stem}.log")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to run (default: every notebooks/NN_*.ipynb)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the executed copies")
    parser.add_argument("--params-dir", type=Path, default=None,
                        help="folder of <notebook stem>.yaml parameter files (smoke runs)")
    parser.add_argument("--jobs", type=int, default=default_workers(),
                        help="notebooks run at the same time (default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=900,
                        help="seconds one cell may run (default: %(default)s)")
    args = parser.parse_args(argv)

    notebooks = args.notebooks or chapter_notebooks()
    if not notebooks:
        print(f"execute_notebooks: no notebooks match {NOTEBOOK_DIR}/NN_*.ipynb; nothing to run.")
        return 0
    out_dir = args.out.resolve()
    if not args.notebooks and out_dir.exists():
        shutil.rmtree(out_dir)  # a full run leaves no stale copy of a renamed chapter behind
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_support_files(REPO_ROOT / NOTEBOOK_DIR, out_dir)

    for key, value in RUN_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    params_dir = args.params_dir.resolve() if args.params_dir else None
    jobs = [papermill_job(nb.resolve(), out_dir, params_dir, args.timeout) for nb in notebooks]
    mode = "smoke" if params_dir else "book"
    ok = run_jobs(f"papermill ({mode} mode) -> {args.out}", jobs, max(1, args.jobs))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
