"""The machine-readable record of the benchmark figures (``benchmarks/results.json``).

Three programs write into one JSON file, each into sections of its own, and keep the sections
the others wrote: ``run.py`` (``make bench``: generators, simulator, scale, losses),
``flower_sim.py`` (``make bench-flower``: fedlib against Flower's simulation engine) and
``chapters.py`` (times and peak memory of the chapters in book mode). Each section carries the
machine it was measured on (:func:`machine`) and its load average at start and end, because
the figures mean little without them.

A figure with a target is a row of the section's ``targets`` list (:func:`target`): its value,
the bound, the comparison and whether it holds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results.json"
SCHEMA = 1


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the system has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model, cores, memory, OS, Python, torch, and the
    commit of the code (``dirty`` when the working tree differed from it)."""
    import torch

    memory = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "fedlib", "benchmarks")
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "commit": commit,
        "code_changed_since_commit": bool(dirty) if dirty is not None else None,
    }


class Run:
    """The bookkeeping of one program's run: start time and load, then :meth:`finish`."""

    def __init__(self, command: str):
        self.command = command
        self.started = now()
        self.load_start = load_average()
        self._tic = time.perf_counter()

    def finish(self, **extra: Any) -> dict[str, Any]:
        """The run's record: machine, command, start and end, wall seconds, load at both ends."""
        wall = time.perf_counter() - self._tic
        return {
            "machine": machine(),
            "command": self.command,
            "started": self.started,
            "finished": now(),
            "wall_s": round(wall, 1),
            "load_start": self.load_start,
            "load_end": load_average(),
            **extra,
        }


def target(figure: str, value: float, op: str, bound: float, unit: str = "") -> dict[str, Any]:
    """One figure against its target: ``value op bound`` with ``op`` one of ``<=``, ``>=``."""
    if op not in ("<=", ">="):
        raise ValueError(f"target: 'op' must be '<=' or '>=', got {op!r}.")
    met = value <= bound if op == "<=" else value >= bound
    return {"figure": figure, "value": value, "unit": unit, "op": op, "bound": bound,
            "met": bool(met), "value_over_bound": value / bound if bound else None}


def read(path: Path) -> dict[str, Any]:
    """The record at ``path`` ({} when there is none yet)."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SystemExit(f"{path} is not valid JSON ({error}); move it aside or repair it.") \
            from error


def merge(path: Path, sections: dict[str, Any]) -> None:
    """Write ``sections`` into the record at ``path``, keeping every other section."""
    data = read(path)
    data["schema"] = SCHEMA
    data.update(sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    print(f"Wrote {', '.join(sections)} into {_shown(path)}", file=sys.stderr)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
