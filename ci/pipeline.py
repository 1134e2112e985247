"""Shared pieces of the CI scripts: which notebooks are chapters, and running jobs side by side.

Every chapter notebook runs in its own process with one CPU thread (papermill in
``execute_notebooks.py``, pytest --nbval in ``run_nbval.py``), so two of them fill the two cores
of a CI machine without slowing each other down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

LOG_TAIL_LINES = 80
REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = "notebooks"
CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"
# Where a chapter opens in Colab: the README links it, every chapter page shows it.
COLAB_URL = "https://colab.research.google.com/github/fedlib/fedlib-book/blob/main/notebooks/{}"


def chapter_notebooks(root: Path = REPO_ROOT) -> list[Path]:
    """The chapter sources ``notebooks/NN_topic.ipynb``, in chapter order."""
    return sorted((root / NOTEBOOK_DIR).glob(CHAPTER_GLOB))


def copy_support_files(source_dir: Path, dest_dir: Path) -> None:
    """Copy what sits beside the chapters (figures, small data files), but no notebooks.

    The executed copies live in another folder than the sources; with these files beside them,
    a chapter that opens ``figures/x.png`` finds it there too (nbval runs the kernel in the
    notebook's own folder, and the book links images relative to the page).
    """
    ignore = shutil.ignore_patterns("*.ipynb", ".*", "__pycache__")
    for entry in source_dir.iterdir():
        if ignore(str(source_dir), [entry.name]):
            continue
        target = dest_dir / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, ignore=ignore, dirs_exist_ok=True)
        else:
            dest_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(entry, target)


@dataclass(frozen=True)
class Job:
    """One command: a short name for the report, the argument list, and where its output goes."""

    name: str
    argv: list[str]
    log: Path


@dataclass(frozen=True)
class Outcome:
    job: Job
    returncode: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def default_workers() -> int:
    """Two workers where there are two cores or more (CI has two), else one."""
    return max(1, min(2, os.cpu_count() or 1))


def _run(job: Job) -> Outcome:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with job.log.open("w") as log:
        proc = subprocess.run(job.argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    outcome = Outcome(job, proc.returncode, time.perf_counter() - start)
    status = "ok  " if outcome.ok else "FAIL"
    print(f"  {status} {job.name:<40} {outcome.seconds:7.1f} s   log: {job.log}", flush=True)
    return outcome


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def run_jobs(title: str, jobs: list[Job], workers: int) -> bool:
    """Run ``jobs`` with at most ``workers`` at a time; print a report; True when all succeeded.

    A failed job's log tail (the traceback) is printed after the report, so that the CI log
    alone says what went wrong; the full log stays on disk as an artifact.
    """
    print(f"{title}: {len(jobs)} job(s), {workers} at a time", flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(_run, jobs))
    failed = [o for o in outcomes if not o.ok]
    for outcome in failed:
        print(f"\n----- {outcome.job.name}: exit code {outcome.returncode}, last lines of "
              f"{outcome.job.log} -----")
        print(_tail(outcome.job.log))
    wall = time.perf_counter() - start
    summed = sum(o.seconds for o in outcomes)
    print(f"{title}: {len(outcomes) - len(failed)} ok, {len(failed)} failed; "
          f"wall {wall:.1f} s (sum of jobs {summed:.1f} s)", flush=True)
    return not failed
