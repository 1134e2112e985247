"""papermill's command line, with a fix for a hang of nbclient on widget cells.

    python ci/run_papermill.py IN.ipynb OUT.ipynb [papermill options]

The hang (jupyter/nbclient#312, nteract/papermill#723): while a cell runs, nbclient waits for
the kernel's reply on the shell socket with one long ``get_msg`` and, from another task, sends
messages on that same socket to keep ``Output`` widgets in sync (every ``interact`` panel has
one). Now and then the zmq asyncio wake-up of the waiting receive is lost and the cell waits
until the cell timeout, with the reply already there. Measured here: 10 of 24 runs of a notebook
with 15 ``interact`` cells hung. The fix waits in short slices instead, so a lost wake-up costs
at most one slice; timeouts keep their meaning.
"""

from __future__ import annotations

import time
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


if __name__ == "__main__":
    import sys

    from papermill.cli import papermill
    from papermill.exceptions import PapermillExecutionError

    install()
    try:
        papermill()
    except PapermillExecutionError as error:  # the cell's traceback, without papermill's own
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
