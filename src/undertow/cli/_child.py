"""The processes of a session cluster (:class:`undertow.Cluster`): shell commands that stop
when the process that started them does.

``python -m undertow.cli._child worker ARGS...`` runs ``undertow worker ARGS...`` (any
``undertow`` command works) and reads its standard input, a pipe whose write end only the
parent holds. When the parent goes, however it goes (the end of the interpreter, SIGKILL of a
Jupyter kernel), the pipe reads end of file, and the child gets SIGTERM as from a shell: a
worker drains, a server stops. If it is still there ``GRACE`` seconds later, a second SIGTERM
stops it at once (a job it held then runs again elsewhere, after its lease). A parent that
stops its children itself (``Cluster.close()``) writes ``STOP`` first: one SIGTERM, and the
parent decides how long the drain may take.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

__all__ = ["GRACE", "STOP", "main"]

#: seconds between the parent's end and the second SIGTERM
GRACE = 10.0
#: what a parent that stops its child writes before closing the pipe: one SIGTERM (a drain
#: as long as the parent waits for it), not two
STOP = b"stop\n"


def _watch_parent() -> None:
    asked = b""
    try:
        while chunk := os.read(0, 4096):
            asked += chunk  # the parent writes STOP before it closes the pipe, if it lives
    except OSError:
        pass
    if not asked.startswith(STOP):  # the parent is gone: what it read of us, with it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # (a print to its pipe would fail, the drain's too)
        os.close(devnull)
    os.kill(os.getpid(), signal.SIGTERM)
    if not asked.startswith(STOP):  # nobody waits for a drain: it may not take long
        time.sleep(GRACE)
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    """Watch standard input, then run the command given."""
    threading.Thread(target=_watch_parent, name="undertow-parent-watch", daemon=True).start()
    from undertow.cli import main as cli

    cli(argv if argv is not None else sys.argv[1:], prog_name="undertow")


if __name__ == "__main__":
    main()
