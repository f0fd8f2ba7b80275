"""Copies of a value on every host of a group, on real processes: ``undertow data serve``
nodes that register as different hosts, ``undertow.put(to_group=...)`` and
``ptr.replicate(group)``, the catalog's record of every copy, the job queue's route to the
group, and the copies' owners checked when the servers authenticate.

The nodes run on this machine, each advertised under a name of its own that resolves to
127.0.0.1: spellings of ``localhost`` in other letter cases. Names are compared as written
(as the job queue compares them), and only ``localhost`` itself counts as a loopback name,
so each node is a host of its own to the registry, the catalog and the queue."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import undertow
from undertow.cluster import Registry
from undertow.data import DataStore, copy_to
from undertow.errors import ConfigError, DataNotFound, PermissionDenied, RPCTimeout, ServiceNotFound
from undertow.security import new_token

from ._processes import ChildServer, ServedProcess, data_node, is_stopped
from ._waiting import wait_until

pytestmark = [pytest.mark.timeout(60), pytest.mark.multiproc]

WAIT = 30.0
#: one host name per node; each resolves to 127.0.0.1
HOSTS = ("LOCALHOST", "Localhost", "localHost")


def size_of(pointer: object) -> int:
    return 7


@pytest.fixture
def nodes(url: str, tmp_path: Path) -> Iterator[dict[str, ServedProcess]]:
    """A data server per host of :data:`HOSTS`, registered in ``url``, by host name."""
    for host in HOSTS:
        try:
            socket.getaddrinfo(host, None)
        except OSError:  # pragma: no cover - a resolver that does not fold letter case
            pytest.skip(
                f"this machine's resolver does not resolve {host!r} (glibc with /etc/hosts "
                "folds letter case; this one does not), and the test needs three names of "
                "this machine that are not the word 'localhost', which undertow takes for the "
                "local host; nothing here is wrong with undertow"
            )

    def start(host: str) -> ServedProcess:
        return data_node(url, tmp_path / host, "--host", "127.0.0.1", "--advertise", host)

    with concurrent.futures.ThreadPoolExecutor(len(HOSTS)) as pool:
        started = {host: pool.submit(start, host) for host in HOSTS}
    served = {host: future.result() for host, future in started.items()}
    try:
        yield served
    finally:
        for node in served.values():
            node.stop()


def locations(key: str, url: str) -> list[str]:
    """The URLs the catalog lists for ``key``, sorted."""
    record = undertow.catalog.record(key, backend=url)
    return sorted(location.url for location in record.locations) if record else []


def objects(node: ServedProcess) -> int:
    """How many values ``node`` keeps."""
    with undertow.connect(node.address, timeout=WAIT) as client:
        return int(client.stats()["objects"])


def test_put_to_a_group_leaves_a_copy_on_each_host_with_one_key(
    nodes: dict[str, ServedProcess], url: str
) -> None:
    with Registry(url) as registry:
        registry.set_group("trio", list(HOSTS))
    value = np.arange(1000, dtype=np.float64)
    ptr = undertow.put(value, to_group="trio", tags=["raw"], backend=url)
    everywhere = sorted(node.address for node in nodes.values())
    assert wait_until(lambda: locations(ptr.key, url) == everywhere, WAIT), locations(ptr.key, url)
    record = undertow.catalog.record(ptr.key, backend=url)
    assert record is not None
    assert (record.size, record.type_name, record.tags) == (8000, "numpy.ndarray", ["raw"])
    for location in record.locations:
        at = record.pointer(location)
        assert at.to_json()["secret_key"] == ptr.to_json()["secret_key"]
        np.testing.assert_array_equal(at.fetch(timeout=WAIT), value)  # from that node
    assert [objects(node) for node in nodes.values()] == [1, 1, 1]
    # every host holds it: replicating again copies nothing, and names each copy
    copies = ptr.replicate("trio", backend=url)
    assert [copy.address for copy in copies] == [nodes[host].address for host in HOSTS]
    assert {copy.key for copy in copies} == {ptr.key}
    assert [objects(node) for node in nodes.values()] == [1, 1, 1]


def test_replicate_copies_from_the_holder_and_again_is_a_no_op(
    nodes: dict[str, ServedProcess], url: str
) -> None:
    first, *others = HOSTS
    with Registry(url) as registry:
        registry.set_group("pair", others)
    ptr = undertow.put(np.ones((50, 4)), to=nodes[first].address)
    copies = ptr.replicate("pair", backend=url, timeout=WAIT)
    assert [copy.address for copy in copies] == [nodes[host].address for host in others]
    assert all(copy.to_json() == {**ptr.to_json(), **_place(copy)} for copy in copies)
    assert copies[1][10:12].tolist() == [[1.0] * 4] * 2
    everywhere = sorted(node.address for node in nodes.values())
    assert wait_until(lambda: locations(ptr.key, url) == everywhere, WAIT)
    # the holder's value gone, the copies answer by themselves: nothing is fetched again
    assert ptr.delete() is True
    assert ptr.replicate("pair", backend=url) == copies
    assert [objects(nodes[host]) for host in HOSTS] == [0, 1, 1]
    assert wait_until(lambda: len(locations(ptr.key, url)) == 2, WAIT)


def _place(pointer: undertow.Pointer) -> dict[str, object]:
    form = pointer.to_json()
    return {"host": form["host"], "port": form["port"]}


def test_a_job_on_data_copied_to_a_group_goes_to_the_groups_queue(
    nodes: dict[str, ServedProcess], url: str
) -> None:
    pair = list(HOSTS[1:])
    with Registry(url) as registry:
        registry.set_group("pair", pair)
    ptr = undertow.put(np.zeros(1000), to_group="pair", backend=url)
    assert wait_until(lambda: len(locations(ptr.key, url)) == 2, WAIT)
    with undertow.JobQueue(url, token=False, threshold=4096) as queue:
        job = queue.submit("size_of", ptr)
        assert job.record().queues == ["group:pair", "default"]
        assert "group pair, exactly those hosts" in job.explain()


def test_unknown_groups_hosts_without_a_data_server_and_both_targets_are_refused(
    nodes: dict[str, ServedProcess], url: str
) -> None:
    ptr = undertow.put(3, to=nodes[HOSTS[0]].address)
    with pytest.raises(ConfigError, match=r"no host group 'gpu' .*`undertow group add gpu HOST"):
        ptr.replicate("gpu", backend=url)
    with pytest.raises(ConfigError, match="no host group 'gpu'"):
        undertow.put(3, to_group="gpu", backend=url)
    with Registry(url) as registry:
        registry.set_group("gpu", [HOSTS[1], "node-9.example"])
    with pytest.raises(ServiceNotFound, match=r"'node-9.example' of group 'gpu'.*data serve"):
        ptr.replicate("gpu", backend=url)
    assert objects(nodes[HOSTS[1]]) == 0  # nothing copied while a host lacks a server
    with pytest.raises(ConfigError, match="not both"):
        undertow.put(3, to="data", to_group="gpu", backend=url)


SOURCE = """
    import sys
    import undertow

    undertow.Server("source", data_dir=sys.argv[1]).serve_forever(port=0)
"""


def test_a_copy_that_misses_its_deadline_names_the_host(
    nodes: dict[str, ServedProcess], url: str, tmp_path: Path
) -> None:
    # the value's server, outside the registry, stops answering: the copies cannot finish
    source = ChildServer(SOURCE, tmp_path, (str(tmp_path / "source"),))
    pair = list(HOSTS[1:])
    with Registry(url) as registry:
        registry.set_group("pair", pair)
    try:
        early = undertow.put(np.arange(10), to=source.address)
        late = undertow.put(np.arange(20), to=source.address)
        early.replicate("pair", backend=url)  # each node connected to the source
        source.proc.send_signal(signal.SIGSTOP)
        assert wait_until(lambda: is_stopped(source.proc.pid), WAIT)
        with pytest.raises(RPCTimeout, match=rf"to host '{pair[0]}' .*took over 0.5 s"):
            late.replicate("pair", backend=url, timeout=0.5)
        source.proc.send_signal(signal.SIGCONT)
        copies = late.replicate("pair", backend=url, timeout=WAIT)
        assert [c.fetch().tolist() for c in copies] == [list(range(20))] * 2
    finally:
        source.proc.send_signal(signal.SIGCONT)
        source.stop()


# -- with authentication ----------------------------------------------------------------------

SERVER = """
    import sys
    import undertow
    from undertow.security import TokenAuth

    args = dict(a.split("=", 1) for a in sys.argv[1:])
    server = undertow.Server(
        args["name"], data_dir=args["data"], auth=TokenAuth.from_file(args["tokens"])
    )
    server.serve_forever(port=0)
"""


def test_with_authentication_only_who_may_use_a_value_copies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = new_token("alice"), new_token("bob")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{alice}\n{bob}\n")
    tokens.chmod(0o600)
    monkeypatch.setenv("UNDERTOW_TOKEN", alice)  # the servers fetch from each other as alice
    a, b = (
        ChildServer(SERVER, tmp_path, (f"name={n}", f"data={tmp_path / n}", f"tokens={tokens}"))
        for n in "ab"
    )
    try:
        with (
            undertow.connect(a.address, token=alice, timeout=WAIT) as alice_a,
            undertow.connect(b.address, token=alice, timeout=WAIT) as alice_b,
            undertow.connect(b.address, token=bob, timeout=WAIT) as bob_b,
        ):
            ptr = undertow.put({"rows": [1, 2]}, to=alice_a)  # pickled: signed callers only
            with pytest.raises(PermissionDenied, match=r"'bob' may not use .* of 'alice'"):
                copy_to(ptr, bob_b)
            port = int(b.address.rpartition(":")[2])
            not_yet = undertow.Pointer({**ptr.to_json(), "port": port}, via=alice_b)
            with pytest.raises(DataNotFound):  # refused before the value travelled
                not_yet.fetch()
            copy = copy_to(ptr, alice_b)
            assert copy.address == b.address
            assert copy.key == ptr.key
            assert undertow.Pointer(copy.to_json(), via=alice_b).fetch() == {"rows": [1, 2]}
            with pytest.raises(PermissionDenied, match="'bob' may not use"):
                undertow.Pointer(copy.to_json(), via=bob_b).fetch()  # the owner came along
            assert copy_to(ptr, alice_b) == copy
    finally:
        a.stop()
        b.stop()


# -- the store -----------------------------------------------------------------------------------


def test_a_store_adopts_a_key_once_and_keeps_it_across_a_restart(tmp_path: Path) -> None:
    store = DataStore(tmp_path, memory_limit=0)  # every value spilled
    original = DataStore(tmp_path / "elsewhere").put(b"abc", tags=["t"], owner="alice")
    key, secret = original.key, original.secret
    entry, new = store.adopt(
        b"abc", key=key, secret=secret, owner="alice", tags=["t"], shared=["bob"], created=5.0
    )
    assert new
    assert entry.where == "disk"
    assert (entry.key, entry.secret, entry.owner, entry.tags, entry.shared, entry.created) == (
        original.key,
        original.secret,
        "alice",
        ("t",),
        ("bob",),
        5.0,
    )
    again, new = store.adopt(b"other", key=key, secret=secret, owner="alice")
    assert not new
    assert again == entry
    assert store.get(entry.key) == b"abc"
    assert DataStore(tmp_path).entry(entry.key) == entry  # found again after a restart
    for key in ("../../etc/x", "A" * 32, original.key[:-1]):
        with pytest.raises(ConfigError, match="32 lowercase hex"):
            store.adopt(b"x", key=key, secret="s", owner="alice")
