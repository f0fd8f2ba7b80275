"""The dashboard: a live page of the cluster, built on the public API below it.

::

    from undertow.dashboard import serve

    with serve("redis://queue-host:6379/0") as dashboard:   # 127.0.0.1, a free port
        print(dashboard.url)          # http://127.0.0.1:PORT/?token=...: open it once
        input("Enter to stop")

``undertow dashboard`` does the same from the shell. The page shows the services and their
instances with their health, the workers and what each runs, the queues with their depth
and throughput over time, the jobs (state, output, explain()), the data catalog (no
secrets: key, type, size, owner, tags, hosts) and each function's latency; it updates
itself over server-sent events. docs/dashboard.md says how, and how it is kept safe.
"""

from undertow.dashboard._serve import Dashboard, serve

__all__ = ["Dashboard", "serve"]

Dashboard.__module__ = __name__
serve.__module__ = __name__
