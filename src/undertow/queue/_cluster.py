"""A cluster from a notebook: :class:`Cluster` starts one on this machine, or attaches to a
running one, and submits jobs, puts data and connects to services through it."""

from __future__ import annotations

import html
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from undertow._util import html_table
from undertow.config import redact_url
from undertow.data import Pointer
from undertow.errors import ClusterError, UndertowError
from undertow.queue._job import Job
from undertow.queue._local import Child, start_child, stop_children
from undertow.queue._queue import JobQueue
from undertow.queue._sessions import forget_session, keep_session
from undertow.rpc import Client
from undertow.rpc import stats as server_stats
from undertow.security import find_client_token, new_token
from undertow.service import connect, put
from undertow.storage import JobState, check_queue_name

__all__ = ["Cluster", "local"]


class Cluster:
    """Jobs, data and services of a cluster, from a notebook or a script.

    ::

        cluster = undertow.Cluster()               # here: a registry, a data server, workers
        job = cluster.submit(lambda x: x * 2, 21)  # notebook functions and lambdas work
        job.result(timeout=60)                     # 42
        squares = cluster.map(lambda x: x * x, range(100))
        ptr = cluster.put(big_array)               # left on the cluster's data server
        cluster.close()                            # or: with undertow.Cluster() as cluster:

        cluster = undertow.Cluster("redis://queue-host:6379/0")   # a running cluster: attach

    Started here (no ``backend``), it keeps its registry and queue in a SQLite file of a
    private session directory, makes a token for the session and hands it to every process
    it starts (so lambdas may be pickled: nothing that lacks the token can submit pickle),
    and stops them all on :meth:`close`, at the end of the interpreter, or when this process
    is killed (each child watches a pipe from it).

    Args:
        backend: the backend URL of a running cluster to attach to (its registry and queue);
            None starts one here.
        workers: worker processes to start (default: one per CPU when starting a cluster,
            none when attaching); more with :meth:`add_workers`.
        concurrency: jobs each worker runs at once.
        queues: the queues the workers take jobs from; the first is where jobs go by default.
        modules: modules whose functions the workers run by name (``submit("name", ...)``),
            imported from the current directory, the running script's directory or
            PYTHONPATH.
        data: start a data server for :meth:`put` (default: when starting a cluster).
        token: the token jobs are signed with. Default: a new one for the session when
            starting a cluster; ``$UNDERTOW_TOKEN`` or the settings file when attaching.
        python: the interpreter of the processes started (default: this one).
        timeout: seconds each process may take to start, and each backend operation.
    """

    def __init__(
        self,
        backend: str | None = None,
        *,
        workers: int | None = None,
        concurrency: int = 4,
        queues: Sequence[str] = ("default",),
        modules: Sequence[str] = (),
        data: bool | None = None,
        token: str | None = None,
        python: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if isinstance(queues, str) or not queues:
            raise ValueError(f"queues={queues!r}: give a list of queue names, e.g. ['default']")
        self.queues = [check_queue_name(q) for q in queues]
        self.concurrency, self.modules = concurrency, list(modules)
        self.python, self.timeout = python or sys.executable, timeout
        self.started_here = backend is None
        self._dir = Path(tempfile.mkdtemp(prefix="undertow-session-"))  # private: 0700
        self._children: list[Child] = []
        session = ""
        if backend is None:
            backend = f"sqlite://{self._dir / 'cluster.db'}"
            if token is None:  # kept, so that a restarted kernel reads pickled results
                session = f"session-{self._dir.name.rsplit('-', 1)[-1].replace('-', '_')}"
                token = new_token(session)
                keep_session(session, token)
        else:
            token = find_client_token(token)
        self._finalizer = weakref.finalize(
            self, _shutdown, self._children, self._dir, timeout, session
        )
        self.backend = backend
        self._token = token
        self._jobs = JobQueue(backend, token=token or False, queue=self.queues[0], timeout=timeout)
        self._data: Client | None = None
        self._dashboard: str | None = None  # its URL, once dashboard_link started it
        try:
            if data if data is not None else self.started_here:
                self._start_data()
            self.add_workers(workers if workers is not None else self._default_workers())
        except BaseException:
            self.close()
            raise

    def _default_workers(self) -> int:
        return (os.cpu_count() or 1) if self.started_here else 0

    # -- processes ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ, UNDERTOW_BACKEND=self.backend)
        env.pop("UNDERTOW_TOKENS", None)
        env.pop("UNDERTOW_TOKEN", None)
        if self._token:  # what callers must sign with, and what the workers' jobs sign with
            env["UNDERTOW_TOKEN"] = self._token  # (pointers passed to jobs); only we read it
        path = [*_here(), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
        return env

    def _start(self, kind: str, args: list[str], python: str | None = None) -> Child:
        self._check_open()
        number = sum(c.kind == kind for c in self._children) + 1
        child = start_child(
            kind,
            args,
            python=python or self.python,
            env=self._env(),
            cwd=os.getcwd(),
            log=self._dir / f"{kind}-{number}.log",
            timeout=self.timeout,
        )
        self._children.append(child)
        return child

    def _start_data(self) -> None:
        args = ["data", "serve", "--data-dir", str(self._dir / "data")]
        child = self._start("data", args)
        self._data = Client(child.ready, token=self._token or False)

    def add_workers(
        self,
        count: int = 1,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        modules: Sequence[str] | None = None,
        python: str | None = None,
        venv: str | os.PathLike[str] | None = None,
    ) -> list[str]:
        """Start ``count`` more worker processes (options default to the cluster's); their
        names. ``python`` or ``venv`` (a virtual environment's directory) runs them on another
        interpreter, which must have undertow installed. They stop with the cluster."""
        if count < 0:
            raise ValueError(f"count={count!r}: start 0 workers or more")
        if venv is not None:
            python = str(Path(venv) / "bin" / "python")
        args = ["worker", "--concurrency", str(concurrency or self.concurrency)]
        for queue in queues or self.queues:
            args += ["--queue", check_queue_name(queue)]
        for module in self.modules if modules is None else modules:
            args += ["--module", module]
        return [self._start("worker", args, python).ready for _ in range(count)]

    @property
    def workers(self) -> list[str]:
        """The names of the worker processes this cluster started that are running."""
        return [c.ready for c in self._children if c.kind == "worker" and c.alive]

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Job:
        """Queue ``fn(*args, **kwargs)`` as a durable job (see :meth:`JobQueue.submit
        <undertow.queue.JobQueue.submit>` for ``queue=``, ``retries=`` and the other
        options); its :class:`~undertow.Job`."""
        self._check_open()
        return self._jobs.submit(fn, *args, **kwargs)

    def map(
        self,
        fn: Callable[..., Any] | str,
        /,
        *iterables: Iterable[Any],
        progress: bool = False,
        **options: Any,
    ) -> list[Job]:
        """Queue ``fn(*items)`` for each set of items of ``iterables``; the jobs, in order.
        With ``progress=True``, wait for them to end under a progress bar (a widget in a
        notebook); see :meth:`JobQueue.map <undertow.queue.JobQueue.map>`."""
        self._check_open()
        return self._jobs.map(fn, *iterables, progress=progress, **options)

    def job(self, job_id: str) -> Job:
        """The job with that id (submitted from anywhere)."""
        return self._jobs.job(job_id)

    def jobs(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        submitter: str | None = None,
        limit: int = 1000,
    ) -> list[Job]:
        """The jobs in that state, on that queue, of that submitter, oldest first."""
        return self._jobs.jobs(state=state, queue=queue, submitter=submitter, limit=limit)

    def queue_length(self, queue: str | None = None) -> int:
        """How many entries a queue holds (default: the cluster's first queue)."""
        return self._jobs.queue_length(queue)

    def stats(self) -> dict[str, Any]:
        """The cluster's figures: its queues (length, jobs by state) and live workers, as
        :meth:`JobQueue.stats <undertow.queue.JobQueue.stats>` gives them, and its data
        server's (``data``: ``server.stats()`` there; None without one)."""
        figures = self._jobs.stats()
        figures["data"] = None if self._data is None else server_stats(self._data, self.timeout)
        return figures

    # -- data and services -------------------------------------------------------------------

    def put(self, value: Any, *, tags: Iterable[str] = ()) -> Pointer:
        """Leave ``value`` on the cluster's data server; a :class:`~undertow.Pointer` to it."""
        self._check_open()
        if self._data is not None:
            return put(value, to=self._data, tags=tags, timeout=self.timeout)
        return put(value, tags=tags, timeout=self.timeout, backend=self.backend)

    def connect(self, service: str, **options: Any) -> Any:
        """A client of a service registered in this cluster (options: those of
        :func:`undertow.connect`)."""
        self._check_open()
        options.setdefault("backend", self.backend)
        if self._token:
            options.setdefault("token", self._token)
        return connect(service, **options)

    # -- life --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _check_open(self) -> None:
        if self.closed:
            raise ClusterError("this cluster was closed; make a new undertow.Cluster()")

    def close(self) -> None:
        """Stop the processes this cluster started (workers finish the jobs they hold, within
        ``timeout``) and, for a cluster started here, remove its session directory."""
        if self._data is not None:
            self._data.close()
            self._data = None
        self._jobs.close()
        self._finalizer()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dashboard_link(self) -> str:
        """The URL of a live page of this cluster: ``undertow dashboard`` on its backend,
        started on first use in a process of the cluster's (stopped with it), on a free port
        of 127.0.0.1. The URL carries the page's token, which the page swaps for a cookie."""
        self._check_open()
        if self._dashboard is None:
            args = ["dashboard", "--backend", self.backend, "--port", "0"]
            self._dashboard = self._start("dashboard", args).ready
        return self._dashboard

    def _summary(self) -> dict[str, str]:
        data = next((c.ready for c in self._children if c.kind == "data"), None)
        return {
            "backend": redact_url(self.backend),
            "started": "here" if self.started_here else "attached",
            "workers": f"{len(self.workers)} x {self.concurrency} slots",
            "queues": ", ".join(self.queues),
            "data server": data or "none of its own",
            "state": "closed" if self.closed else "running",
        }

    def __repr__(self) -> str:
        summary = self._summary()
        return (
            f"<Cluster {summary['backend']} ({summary['started']}), {summary['workers']}, "
            f"queues {summary['queues']}, {summary['state']}>"
        )

    def _repr_html_(self) -> str:
        """The cluster in a notebook: its backend, its workers by name, its queues with
        how many entries each holds, its data server, and its dashboard's link."""
        summary = self._summary()
        rows = [(key, html.escape(summary[key])) for key in ("backend", "started", "state")]
        names = self.workers
        listed = "<br>".join(html.escape(name) for name in names) or "none running"
        rows.append(("workers", f"{html.escape(summary['workers'])}<br>{listed}"))
        rows.append(("queues", self._queues_html()))
        rows.append(("data server", html.escape(summary["data server"])))
        rows.append(("dashboard", _link(self._dashboard)))
        return html_table("undertow.Cluster", rows)

    def _queues_html(self) -> str:
        """Each queue and how many entries it holds (left out if the backend cannot say)."""
        if self.closed:
            return html.escape(", ".join(self.queues))
        shown = []
        for queue in self.queues:
            try:
                shown.append(f"{html.escape(queue)}: {self.queue_length(queue)} waiting")
            except UndertowError:
                shown.append(html.escape(queue))
        return "<br>".join(shown)


def _link(url: object) -> str:
    """A link to ``url``, or how to have one."""
    if not isinstance(url, str) or not url:
        return "not started: <code>cluster.dashboard_link</code> starts it"
    safe = html.escape(url, quote=True)
    return f"<a href='{safe}' target='_blank'>{safe}</a>"


def _here() -> list[str]:
    """Where this program finds its own modules, for the workers to find them too: the
    current directory and the directory of the script that runs (if one does)."""
    where = [os.getcwd()]
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if script:
        where.append(str(Path(script).resolve().parent))
    return where


def _shutdown(children: list[Child], directory: Path, timeout: float, session: str) -> None:
    """Stop the children, remove the session directory and forget the session's token (also
    at interpreter exit)."""
    stop_children(children, timeout)
    shutil.rmtree(directory, ignore_errors=True)
    if session:
        forget_session(session)


def local(**options: Any) -> Cluster:
    """Start a cluster on this machine (:class:`Cluster` without a backend)."""
    return Cluster(None, **options)
