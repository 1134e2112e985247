"""Re-execute the executed chapter copies with nbval and compare every output, a few at a time.

    python ci/run_nbval.py _build/executed

One ``pytest --nbval`` process per notebook (``--nbval-current-env``, outputs sanitized with
``ci/nbval_sanitize.cfg``); each one's report goes to ``<folder>/<stem>.nbval.log`` and is printed.
Passing means the chapter reproduces bit for bit on this machine. The environment must match the
papermill run (``PLOTLY_RENDERER``, one thread): the Makefile exports it for both. Exit status 1
when any notebook fails, or when a chapter has no executed copy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import Job, chapter_notebooks, default_workers, run_jobs

SANITIZE_CONFIG = Path(__file__).resolve().parent / "nbval_sanitize.cfg"


def nbval_job(notebook: Path, timeout: int) -> Job:
    argv = [
        sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env",
        "--nbval-sanitize-with", str(SANITIZE_CONFIG),
        "--nbval-cell-timeout", str(timeout),
        "-p", "no:cacheprovider", str(notebook),
    ]  # fmt: skip
    return Job(notebook.stem, argv, notebook.with_suffix(".nbval.log"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of executed notebooks")
    parser.add_argument("--jobs", type=int, default=default_workers(),
                        help="notebooks compared at the same time (default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=900,
                        help="seconds one cell may run (default: %(default)s)")
    args = parser.parse_args(argv)

    chapters = chapter_notebooks()
    missing = [ch.name for ch in chapters if not (args.folder / ch.name).is_file()]
    if missing:
        print(f"run_nbval: no executed copy in {args.folder} of {', '.join(missing)}; "
              "run `make execute` first.")
        return 1
    if not chapters:
        print("run_nbval: no chapter notebooks; nothing to compare.")
        return 0
    notebooks = [args.folder / ch.name for ch in chapters]
    jobs = [nbval_job(nb, args.timeout) for nb in notebooks]
    ok = run_jobs("nbval", jobs, max(1, args.jobs))
    for job in jobs:  # each pytest's closing line, e.g. "12 passed in 40.1s"
        lines = job.log.read_text(errors="replace").strip().splitlines()
        print(f"  {job.name}: {lines[-1].strip('= ') if lines else '(no output)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
