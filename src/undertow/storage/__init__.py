"""Storage: one backend interface for everything the cluster keeps (the registry of services,
the data catalog, and the job queue to come), with two backends chosen by URL:

- ``sqlite:///path/to/file.db``: the embedded default (``~/.undertow/cluster.db``), nothing
  to install or start; one machine.
- ``redis://host:port/db`` (``rediss://`` for TLS): several machines; every key name is in
  ``storage/_keys.py``.

::

    from undertow.storage import open_backend

    backend = open_backend("redis://127.0.0.1:6379/0")
    for instance in await backend.all_instances():
        print(instance.service, instance.address)
    await backend.close()

The sync façade over a backend is :class:`undertow.cluster.Registry`.
"""

from undertow.storage._backend import (
    Backend,
    by_age,
    by_creation,
    check_group_name,
    check_hosts,
)
from undertow.storage._jobs import (
    FINAL_STATES,
    Inbox,
    JobRecord,
    JobState,
    JobStore,
    Offer,
    QueueInfo,
    Submitter,
    WorkerInfo,
    check_job_id,
    check_queue_name,
    check_worker_name,
    new_job_id,
)
from undertow.storage._open import open_backend, open_submitter
from undertow.storage._records import Instance, decode_instance, encode_instance

__all__ = [
    "FINAL_STATES",
    "Backend",
    "Inbox",
    "Instance",
    "JobRecord",
    "JobState",
    "JobStore",
    "Offer",
    "QueueInfo",
    "Submitter",
    "WorkerInfo",
    "by_age",
    "by_creation",
    "check_group_name",
    "check_hosts",
    "check_job_id",
    "check_queue_name",
    "check_worker_name",
    "decode_instance",
    "encode_instance",
    "new_job_id",
    "open_backend",
    "open_submitter",
]
