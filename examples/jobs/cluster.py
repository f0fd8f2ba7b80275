"""A cluster on this machine, from a script or a notebook: submit functions, wait, use data.

Run from this directory: ``python cluster.py``. ``undertow.Cluster()`` starts a data server
and two workers in child processes (with a token of their own, so lambdas may be pickled)
and stops them at the end of the ``with`` block.
"""

import undertow


def score(text: str) -> int:
    """A function of this script: pickled by value, it runs on the workers as it is here."""
    print(f"scoring {text!r}")
    return len(text.split())


with undertow.Cluster(workers=2, concurrency=2, modules=["tasks"]) as cluster:
    print("started:", len(cluster.workers), "workers")
    job = cluster.submit(score, "the quick brown fox")  # its print shows here as it comes
    print("score:", job.result(timeout=60))
    print("resize:", cluster.submit("resize", "dog.png", width=64).result(timeout=60))

    jobs = cluster.map(lambda x: x * x, range(10))
    done, pending = undertow.wait(jobs, timeout=60)
    print("waited:", len(done), "done,", len(pending), "pending")
    print("squares:", sorted(job.result(output=False) for job in done))

    words = cluster.put(["alpha", "beta", "gamma"])  # left on the cluster's data server
    print("slice:", words[1:])
    print("longest:", cluster.submit(lambda p: max(p.fetch(), key=len), words).result(60))

    # a result left where it was computed: the job answers with a pointer to it
    table = cluster.submit(lambda n: [i * i for i in range(n)], 100_000, return_pointer=True)
    rows = table.result(timeout=60)
    print("rows 3-5:", rows[3:6])  # only these travel
    print("total:", cluster.submit(lambda p: sum(p.fetch()) % 1000, rows).result(60))
print("stopped")
