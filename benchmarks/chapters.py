"""Time and peak memory of each chapter in book mode, from the executed copies' records.

    make execute                         # papermill, book parameters -> _build/executed
    python benchmarks/chapters.py        # -> the "chapters" section of benchmarks/results.json

or both at once with ``make bench-chapters``. For each ``notebooks/NN_topic.ipynb`` it reads
the executed copy's papermill record (``metadata.papermill``: wall seconds of the whole run,
start and end time, and whether a cell raised) and the ``<stem>.resources.json`` that
``ci/run_papermill.py`` writes beside it (peak resident memory of the kernel process, CPU
seconds of the kernel, load average at start and end). A chapter without an executed copy is
listed as missing; a failed chapter is kept with ``failed: true``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "ci"))

import record  # noqa: E402
from pipeline import chapter_notebooks  # noqa: E402


def title(notebook: dict) -> str:
    """The chapter's H1, without the leading ``# ``."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "markdown":
            source = "".join(cell.get("source", ""))
            for line in source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def chapter_row(source: Path, executed: Path) -> dict[str, Any]:
    """One chapter's figures (``missing: true`` when it has no executed copy)."""
    copy = executed / source.name
    row: dict[str, Any] = {"chapter": source.stem}
    if not copy.is_file():
        return {**row, "missing": True}
    notebook = json.loads(copy.read_text())
    papermill = notebook.get("metadata", {}).get("papermill", {})
    row.update(
        title=title(notebook),
        duration_s=papermill.get("duration"),
        started=papermill.get("start_time"),
        finished=papermill.get("end_time"),
        failed=bool(papermill.get("exception")),
        parameters=papermill.get("parameters", {}),
        mode="book" if not papermill.get("parameters") else "other parameters",
    )
    resources = copy.with_suffix(".resources.json")
    if resources.is_file():
        used = json.loads(resources.read_text())
        row.update(peak_rss_bytes=used.get("peak_rss_bytes"),
                   kernel_cpu_s=used.get("children_cpu_s"),
                   load_start=used.get("load_start"), load_end=used.get("load_end"))
    return row


def execution(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """When the chapters ran, not when they were collected: the first start, the last end, the
    wall seconds between them, and the load average at the first start and at the last end
    (from the resource records); ``collected`` keeps the date of this program's run."""
    import datetime as dt

    timed = [r for r in rows if r.get("started") and r.get("finished")]
    if not timed:
        return {}
    first = min(timed, key=lambda r: r["started"])
    last = max(timed, key=lambda r: r["finished"])
    start, end = (dt.datetime.fromisoformat(t).astimezone(dt.UTC).replace(microsecond=0)
                  for t in (first["started"], last["finished"]))
    out: dict[str, Any] = {"collected": record.now(), "started": start.isoformat(),
                           "finished": end.isoformat(),
                           "wall_s": round((end - start).total_seconds(), 1)}
    if first.get("load_start") and last.get("load_end"):
        out.update(load_start=first["load_start"], load_end=last["load_end"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executed", type=Path, default=record.ROOT / "_build" / "executed",
                        help="folder of the executed copies (default: _build/executed)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="notebooks that ran side by side, to record with the figures")
    parser.add_argument("--out", type=Path, default=record.DEFAULT_OUT,
                        help="JSON record to write into (default: benchmarks/results.json)")
    args = parser.parse_args(argv)
    if not args.executed.is_dir():
        raise SystemExit(f"chapters.py: no folder {args.executed}; run `make execute` first "
                         "(or pass --executed).")
    run = record.Run("python benchmarks/chapters.py " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    rows = [chapter_row(nb, args.executed) for nb in chapter_notebooks(record.ROOT)]
    present = [r for r in rows if not r.get("missing")]
    if not present:
        raise SystemExit(f"chapters.py: {args.executed} holds no executed chapter; run "
                         "`make execute` first.")
    mib = 2**20
    for r in rows:
        if r.get("missing"):
            print(f"  {r['chapter']:<30} no executed copy")
            continue
        peak = r.get("peak_rss_bytes")
        peak_text = f"{peak / mib:7.0f} MiB" if peak else "    n/a"
        status = " (failed)" if r["failed"] else ""
        print(f"  {r['chapter']:<30} {r['duration_s'] or 0:8.1f} s, kernel peak {peak_text}"
              f"{status}")
    record.merge(args.out, {"chapters": {
        "run": {**run.finish(jobs=args.jobs), **execution(present)},
        "setting": "book mode (each chapter's parameters cell), papermill, one CPU thread per "
                   "notebook; time = papermill's duration (wall seconds of the whole run); "
                   "memory = peak resident memory of the kernel process",
        "rows": rows,
    }})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
