"""Every Redis key undertow uses, in one place.

::

    undertow:services                       SET     names of services that have registered
    undertow:service:{name}:instances       SET     ids of the service's instances
    undertow:instance:{id}                  STRING  the instance's record (JSON), expiring
                                                    after its TTL unless a heartbeat renews it

    undertow:data                           SET     keys of every record in the data catalog
    undertow:data:{key}                     STRING  the record's fields (JSON: key, secret,
                                                    type_name, size, created, owner)
    undertow:data:{key}:locations           LIST    where it is, in the order recorded: one
                                                    JSON per location (protocol, host, port,
                                                    path and the object's size)
    undertow:data:{key}:tags                SET     the record's tags
    undertow:tag:{tag}                      SET     keys of the records that carry the tag

    undertow:job:{id}                       HASH    the job's record, a field each (JobRecord's
                                                    names; numbers as text, queues joined by
                                                    spaces, a None field absent)
    undertow:job:{id}:output                LIST    what the job printed, in order
    undertow:queue:{name}                   LIST    ids of jobs waiting on the queue, oldest
                                                    first (LPOP takes, RPUSH adds)
    undertow:jobs                           ZSET    every stored job's id by its submitted time
                                                    (listing)
    undertow:jobs:running                   ZSET    ids of RUNNING jobs by lease_until (sweep)
    undertow:jobs:delayed                   ZSET    ids of QUEUED jobs not due yet, by
                                                    not_before; pushed onto their queues when
                                                    due (by a claim or a sweep)
    undertow:jobs:final                     ZSET    ids of final jobs by when they are purged
                                                    (finished + result_ttl)
    undertow:jobs:idempotency:{key}         STRING  the id of the job submitted with that key
    undertow:jobs:counts                    HASH    "{queue} {state}" -> how many stored jobs
                                                    naming the queue are in that state (no
                                                    field at zero); its queues are those
                                                    listed by JobStore.queues()
    undertow:workers                        ZSET    names of the workers by when they are no
                                                    longer live (last beat + ttl, the workers'
                                                    clock)
    undertow:workers:info                   HASH    name -> the worker's WorkerInfo (JSON)
    undertow:signal:{name}                  CHANNEL a message when ids are pushed onto queue
                                                    {name}'s list, unless it is long (idle
                                                    workers subscribe)
    undertow:idle:{name}                    ZSET    workers with free slots that wait on queue
                                                    {name}, by when their offer lapses (their
                                                    clock); a new job is handed to one of them
    undertow:offers                         HASH    worker -> "{free slots} {lease} {queues}":
                                                    what the worker offered at its last claim
                                                    (the slots count down as jobs are handed)
    undertow:inbox:{worker}                 LIST    jobs handed to the worker, started for it:
                                                    "{attempt} {lease_until} {started}
                                                    {length}\n" then the job's text fields
                                                    (msgpack) and its payload; expires

    undertow:groups                         SET     names of the host groups
    undertow:group:{name}                   ZSET    the group's hosts, scored by the order
                                                    they were added in (0, 1, ...); written
                                                    with the name set in one step, and gone
                                                    with its last host

An instance whose key expired is dead; its id is removed from its service's set by the next
lookup that finds it missing. Data records never expire: a record's keys, its key in
``undertow:data`` and in its tags' sets are written and removed together, in one transaction.

A job's keys change only inside the Lua scripts of ``storage/_redis_scripts.py``, which build
``undertow:job:{id}`` and ``undertow:queue:{name}`` from :data:`JOB_PREFIX` and
:data:`QUEUE_PREFIX` (given to them as arguments), and a job's output and idempotency keys
from :data:`OUTPUT_SUFFIX` and :data:`IDEMPOTENCY_PREFIX`. A purged job loses its record,
output, idempotency key and index entry together; an id left on a queue list is dropped when
it comes up. The counts by state change in the same scripts, with every change of state.
A script that pushes ids onto a queue list holding at most 1,000 publishes one message on
the queue's channel (``undertow:signal:{name}``), which idle workers listen to. A
worker whose time ran out is forgotten (from both worker keys) by the next beat or listing.
"""

from __future__ import annotations

__all__ = [
    "DATA",
    "GROUPS",
    "IDEMPOTENCY_PREFIX",
    "IDLE_OFFERS",
    "IDLE_PREFIX",
    "INBOX_PREFIX",
    "JOBS",
    "JOBS_DELAYED",
    "JOBS_FINAL",
    "JOBS_RUNNING",
    "JOB_COUNTS",
    "JOB_PREFIX",
    "OUTPUT_SUFFIX",
    "PREFIX",
    "QUEUE_PREFIX",
    "SERVICES",
    "SIGNAL_PREFIX",
    "WORKERS",
    "WORKERS_INFO",
    "data",
    "data_locations",
    "data_tags",
    "group",
    "idempotency",
    "idle",
    "inbox",
    "instance",
    "job",
    "job_output",
    "queue",
    "service_instances",
    "signal",
    "tag",
]

PREFIX = "undertow"
SERVICES = f"{PREFIX}:services"
DATA = f"{PREFIX}:data"
JOBS = f"{PREFIX}:jobs"
JOBS_RUNNING = f"{JOBS}:running"
JOBS_DELAYED = f"{JOBS}:delayed"
JOBS_FINAL = f"{JOBS}:final"
JOB_PREFIX = f"{PREFIX}:job:"
QUEUE_PREFIX = f"{PREFIX}:queue:"
OUTPUT_SUFFIX = ":output"
IDEMPOTENCY_PREFIX = f"{JOBS}:idempotency:"
JOB_COUNTS = f"{JOBS}:counts"
#: the channels a queue's new jobs are announced on (idle workers listen)
SIGNAL_PREFIX = f"{PREFIX}:signal:"
#: the sorted sets of the workers waiting idle on a queue, and what each offered
IDLE_PREFIX = f"{PREFIX}:idle:"
IDLE_OFFERS = f"{PREFIX}:offers"
#: the lists of the jobs handed to a worker
INBOX_PREFIX = f"{PREFIX}:inbox:"
WORKERS = f"{PREFIX}:workers"
WORKERS_INFO = f"{WORKERS}:info"
GROUPS = f"{PREFIX}:groups"


def service_instances(service: str) -> str:
    """The set of a service's instance ids."""
    return f"{PREFIX}:service:{service}:instances"


def instance(instance_id: str) -> str:
    """An instance's record."""
    return f"{PREFIX}:instance:{instance_id}"


def data(key: str) -> str:
    """A data record's fields (without its tags and locations)."""
    return f"{DATA}:{key}"


def data_locations(key: str) -> str:
    """The list of a data record's locations."""
    return f"{DATA}:{key}:locations"


def data_tags(key: str) -> str:
    """The set of a data record's tags."""
    return f"{DATA}:{key}:tags"


def tag(name: str) -> str:
    """The set of the keys of the data records tagged ``name``."""
    return f"{PREFIX}:tag:{name}"


def job(job_id: str) -> str:
    """A job's record (a hash)."""
    return f"{JOB_PREFIX}{job_id}"


def job_output(job_id: str) -> str:
    """The list of a job's output pieces."""
    return f"{JOB_PREFIX}{job_id}{OUTPUT_SUFFIX}"


def queue(name: str) -> str:
    """The list of the ids waiting on queue ``name``."""
    return f"{QUEUE_PREFIX}{name}"


def signal(queue_name: str) -> str:
    """The channel on which a message says that queue ``queue_name`` has new jobs (idle
    workers listen, instead of polling)."""
    return f"{SIGNAL_PREFIX}{queue_name}"


def idle(queue_name: str) -> str:
    """The sorted set of the workers waiting idle on queue ``queue_name``."""
    return f"{IDLE_PREFIX}{queue_name}"


def inbox(worker: str) -> str:
    """The list of the jobs handed to ``worker`` (started for it, not yet taken)."""
    return f"{INBOX_PREFIX}{worker}"


def idempotency(key: str) -> str:
    """The id of the job submitted with idempotency key ``key``."""
    return f"{IDEMPOTENCY_PREFIX}{key}"


def group(name: str) -> str:
    """The sorted set of host group ``name``'s hosts."""
    return f"{PREFIX}:group:{name}"
