"""papermill's command line, with a fix for a hang of nbclient on widget cells.

    python ci/run_papermill.py IN.ipynb OUT.ipynb [papermill options]

The hang (jupyter/nbclient#312, nteract/papermill#723): while a cell runs, nbclient waits for
the kernel's reply on the shell socket with one long ``get_msg`` and, from another task, sends
messages on that same socket to keep ``Output`` widgets in sync (every ``interact`` panel has
one). Now and then the zmq asyncio wake-up of the waiting receive is lost and the cell waits
until the cell timeout, with the reply already there. Measured here: 10 of 24 runs of a notebook
with 15 ``interact`` cells hung. The fix waits in short slices instead, so a lost wake-up costs
at most one slice; timeouts keep their meaning.

After the run (failed or not) ``OUT.resources.json`` records what the kernel used: the peak
resident memory of the largest process this one started and waited for (the kernel; read from
``getrusage(RUSAGE_CHILDREN)``), their CPU seconds, this run's wall seconds and the load
average at both ends. ``benchmarks/chapters.py`` collects these records.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from queue import Empty

from jupyter_client.channels import AsyncZMQSocketChannel

POLL_SLICE_SECONDS = 0.5
_original_get_msg = AsyncZMQSocketChannel.get_msg


async def _get_msg_in_slices(self, timeout: float | None = None):
    """``get_msg`` with the same contract, polling in slices of ``POLL_SLICE_SECONDS``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        step = POLL_SLICE_SECONDS if left is None else min(POLL_SLICE_SECONDS, left)
        try:
            return await _original_get_msg(self, timeout=step)
        except Empty:
            if left is not None and left <= step:
                raise


def install() -> None:
    AsyncZMQSocketChannel.get_msg = _get_msg_in_slices


def write_resources(out_notebook: str, started: float, load_start: list[float]) -> None:
    """``<OUT>.resources.json`` beside the executed copy (see the module docstring)."""
    if not out_notebook.endswith(".ipynb"):
        return
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    record = {
        "peak_rss_bytes": usage.ru_maxrss * scale,
        "children_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "wall_s": round(time.perf_counter() - started, 2),
        "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = Path(out_notebook).with_suffix(".resources.json")
    path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    from papermill.cli import papermill
    from papermill.exceptions import PapermillExecutionError

    install()
    started, load_start = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    try:
        papermill()
    except PapermillExecutionError as error:  # the cell's traceback, without papermill's own
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        if len(sys.argv) > 2:
            write_resources(sys.argv[2], started, load_start)
