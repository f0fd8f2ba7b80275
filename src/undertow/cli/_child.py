"""The processes of a session cluster (:class:`undertow.Cluster`): shell commands that stop
when the process that started them does.

``python -m undertow.cli._child worker ARGS...`` runs ``undertow worker ARGS...`` (any
``undertow`` command works) and reads its standard input, a pipe whose write end only the
parent holds. When the parent goes, however it goes (``close()``, the end of the interpreter,
SIGKILL of a Jupyter kernel), the pipe reads end of file, and the child gets SIGTERM as from a
shell: a worker drains, a server stops. If it is still there ``GRACE`` seconds later, a
second SIGTERM stops it at once (a job it held then runs again elsewhere, after its lease).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

__all__ = ["GRACE", "main"]

#: seconds between the parent's end and the second SIGTERM
GRACE = 10.0


def _watch_parent() -> None:
    try:
        while os.read(0, 4096):
            pass  # the parent writes nothing; anything read is ignored
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    """Watch standard input, then run the command given."""
    threading.Thread(target=_watch_parent, name="undertow-parent-watch", daemon=True).start()
    from undertow.cli import main as cli

    cli(argv if argv is not None else sys.argv[1:], prog_name="undertow")


if __name__ == "__main__":
    main()
