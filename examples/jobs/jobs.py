"""Durable jobs: submit them, let a worker run them, read the results back.

Run from this directory: ``python jobs.py``. The jobs live in a SQLite file (by default the
cluster backend, ``~/.undertow/cluster.db``; here a file of its own so the example starts
clean), so they would survive this script, the worker or both stopping.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from undertow.queue import JobQueue
from undertow.security import new_token

here = Path(__file__).resolve().parent
backend = f"sqlite://{Path(tempfile.mkdtemp()) / 'jobs.db'}"
token = new_token("me")  # lambdas are pickled: workers run them only for tokens they know

with JobQueue(backend, token=token) as jobs:
    resized = jobs.submit("resize", "cat.png", width=200)  # by name: the worker registers it
    doubled = jobs.submit(lambda x: 2 * x, 21)  # a notebook lambda, pickled and signed
    squares = jobs.map(lambda x: x * x, range(8))  # one job per item
    print("queued:", jobs.queue_length(), "jobs")

    # a worker in another process, as you would start it on any machine of the cluster:
    #   undertow worker --backend URL --module tasks --tokens FILE
    # --burst: stop once the queue is empty
    worker = [sys.executable, "-m", "undertow.cli", "worker", "--burst", "--backend", backend]
    env = dict(os.environ, UNDERTOW_TOKEN=token)
    subprocess.run(  # noqa: S603 - our own command line
        [*worker, "--module", "tasks"],
        cwd=here,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )

    print("resize:", resized.result(timeout=30))  # what the job printed shows first, here
    print("it printed:", resized.output().strip())  # and is kept with the job
    print("doubled:", doubled.result(timeout=30))
    print("squares:", [job.result(timeout=30) for job in squares])
    print("state:", jobs.job(doubled.id).state)  # any process can look a job up by its id
