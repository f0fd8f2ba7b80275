"""Services: @Expose() classes, served in process and launched as real processes, found by
name through the registry."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import threading
import time
from collections.abc import Iterator
from typing import Any

import attr
import pytest

import undertow
from undertow.cluster import Instance, Registry
from undertow.errors import (
    BackendError,
    ConfigError,
    ConnectionClosed,
    FunctionNotFound,
    RPCTimeout,
    ServiceNotFound,
)
from undertow.service import Expose, ServiceHost, ServiceModule
from undertow.service._expose import exposed_methods, service_spec

from ._waiting import suspend, wait_until

WAIT = 20.0


# -- @Expose -----------------------------------------------------------------------------------


@Expose()
class Plain:
    """A plain class."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    @Expose()
    def add(self, item: Any) -> int:
        """Add an item; returns how many there are."""
        self.items.append(item)
        return len(self.items)

    def hidden(self) -> str:
        return "never reachable"


@Expose(name="Counter", config={"count_*": {"output": False}})
@dataclasses.dataclass
class DataCounter:
    n: int = 0

    @Expose()
    def count_up(self, by: int = 1) -> int:
        print("counting")  # configured not to reach the caller
        self.n += by
        return self.n


@attr.attributes
@Expose(ttl=3)
class AttrsInner:  # Expose inside attrs: the mark survives attrs' class rewriting
    store: dict[str, Any] = attr.attr(default=attr.Factory(dict))

    @Expose(name="put_item", timeout=0.2)
    def put(self, key: str, value: Any) -> None:
        self.store[key] = value


def test_expose_marks_the_class_and_only_the_exposed_methods():
    plain, counter, inner = (service_spec(c) for c in (Plain, DataCounter, AttrsInner))
    assert plain is not None
    assert plain.name == "Plain"
    assert list(exposed_methods(Plain)) == ["add"]
    assert counter is not None
    assert counter.name == "Counter"
    assert list(exposed_methods(DataCounter)) == ["count_up"]
    assert inner is not None
    assert inner.ttl == 3.0
    assert exposed_methods(AttrsInner)["put_item"][0] == "put"

    class Sub(Plain):  # a subclass is not the service it derives from
        pass

    assert service_spec(Sub) is None


def test_expose_rejects_bad_options_where_they_are_written():
    with pytest.raises(ConfigError, match=r"unknown option 'timout'.*did you mean 'timeout'"):

        class A:
            @Expose(timout=3)
            def f(self) -> None: ...

    with pytest.raises(ConfigError, match="a class takes name=, config="):

        @Expose(timeout=3)
        class B:
            pass

    with pytest.raises(ConfigError, match="glob"):

        @Expose(config={"": {}})
        class C:
            pass

    with pytest.raises(ConfigError, match="not a service"):
        ServiceModule.discover(int)


# -- served in this process ----------------------------------------------------------------------


@Expose()
class Kitchen:
    """Every kind of method."""

    def __init__(self) -> None:
        self.calls = 0

    @Expose()
    def greet(self, name: str, punctuation: str = "!") -> str:
        """Say hello."""
        print(f"greeting {name}")
        self.calls += 1
        return f"hello {name}{punctuation}"

    @Expose()
    async def later(self, x: int) -> int:
        await suspend()  # a coroutine that really suspends
        return x * 2

    @Expose()
    def count(self, n: int) -> Iterator[int]:
        yield from range(n)

    @Expose()
    def fail(self) -> None:
        raise KeyError("missing")

    @Expose()
    def stall(self, event_wait: float) -> None:
        threading.Event().wait(event_wait)

    @Expose()
    def total_calls(self) -> int:
        return self.calls


@pytest.fixture
def hosted() -> Iterator[ServiceHost]:
    """Kitchen, DataCounter and AttrsInner served from a thread of this process."""
    with serving(ServiceHost([Kitchen(), DataCounter(), AttrsInner()], quiet=True)) as host:
        yield host


@contextlib.contextmanager
def serving(host: ServiceHost) -> Iterator[ServiceHost]:
    """``host`` serving from a thread of this process, registered, until the block ends."""
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(host.serve(ready=lambda _: ready.set()))
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(WAIT)
    assert not failure, failure
    try:
        yield host
    finally:
        host.stop()
        thread.join(WAIT)
    assert not thread.is_alive()


def test_a_discovered_service_has_the_clients_features(hosted):
    lines: list[tuple[str, str]] = []
    kitchen = ServiceModule.discover(Kitchen, timeout=WAIT, output=lambda *o: lines.append(o))
    with kitchen:
        assert kitchen.greet("ada") == "hello ada!"
        assert lines == [("stdout", "greeting ada\n")]  # remote output, sent to the caller
        assert kitchen.later(21) == 42
        assert list(kitchen.count(3)) == [0, 1, 2]
        assert kitchen.greet.submit("bob", punctuation="?").result(WAIT) == "hello bob?"
        assert str(inspect.signature(kitchen.greet)) == "(name: str, punctuation: str = '!') -> str"
        assert kitchen.greet.__doc__ == "Say hello."
        assert "greet" in dir(kitchen)
        with pytest.raises(KeyError, match="missing"):
            kitchen.fail()
        with pytest.raises(FunctionNotFound, match="hidden"):
            kitchen.hidden()
        with pytest.raises(RPCTimeout, match="stall"):
            kitchen.stall.options(timeout=0.2)(5)
        assert "Kitchen" in repr(kitchen)
        assert [i.service for i in kitchen.instances] == ["Kitchen"]


def test_state_is_kept_between_clients(hosted):
    with ServiceModule.discover("Kitchen", timeout=WAIT) as first:
        first.greet("a")
    with undertow.connect("Kitchen") as second:  # by name, through the top-level connect
        second.greet("b")
        assert second.total_calls() == 2


def test_class_and_method_options_apply(hosted):
    lines: list[tuple[str, str]] = []
    with ServiceModule.discover("Counter", timeout=WAIT, output=lambda *o: lines.append(o)) as c:
        assert c.count_up(by=2) == 2
        assert lines == []  # output=False from the class config
    with ServiceModule.discover(AttrsInner, timeout=WAIT) as inner:
        assert inner.put_item("k", [1, 2]) is None
        assert inner.instances[0].ttl == 3.0
    with Registry() as registry:
        (record,) = registry.instances("AttrsInner")
    (put,) = record.methods
    assert (put.name, put.timeout) == ("put_item", 0.2)


def test_stopping_the_host_deregisters_at_once(hosted):
    with Registry() as registry:
        assert {i.service for i in registry.all_instances()} == {
            "Kitchen",
            "Counter",
            "AttrsInner",
        }
        hosted.stop()
        # stop() only asks: the records go just before the servers close, long before the
        # TTL (10 s) would have removed them
        assert wait_until(lambda: registry.all_instances() == [], 2.0)


def test_discovery_waits_for_a_service_then_says_what_the_registry_holds(hosted):
    with pytest.raises(ServiceNotFound) as failure:
        ServiceModule.discover("Nobody", timeout=0.3)
    message = str(failure.value)
    assert "'Nobody'" in message
    assert "sqlite:///" in message  # which backend was searched
    assert "'Kitchen'" in message  # and what it holds


def test_discovery_waits_for_a_service_that_comes_up_later(monkeypatch):
    looked_in_vain = threading.Event()
    lookup = Registry.instances

    def spied(self: Registry, service: str) -> list[Instance]:
        found = lookup(self, service)
        if not found:
            looked_in_vain.set()
        return found

    monkeypatch.setattr(Registry, "instances", spied)
    found: list[Any] = []
    seeker = threading.Thread(
        target=lambda: found.append(ServiceModule.discover("Plain", timeout=WAIT))
    )
    seeker.start()
    assert looked_in_vain.wait(WAIT)  # discovery found nothing at first ...
    host = ServiceHost([Plain()], quiet=True)
    thread = threading.Thread(target=lambda: asyncio.run(host.serve()), daemon=True)
    thread.start()
    try:
        seeker.join(WAIT)
        assert found, "discovery gave up although the service came up within its deadline"
        with found[0] as plain:  # ... and kept looking until it came up
            assert plain.add("x") == 1
    finally:
        host.stop()
        thread.join(WAIT)


def test_the_host_refuses_what_it_cannot_serve():
    with pytest.raises(ConfigError, match="nothing to serve"):
        ServiceHost([])
    with pytest.raises(ConfigError, match="not a service"):
        ServiceHost([object()])

    @Expose()
    class Empty:
        pass

    with pytest.raises(ConfigError, match="exposes no methods"):
        ServiceHost([Empty()])
    with pytest.raises(ConfigError, match="rename one service"):
        ServiceHost([Plain(), Kitchen()], name="x")


def test_instance_records_say_where_and_what(hosted):
    with Registry() as registry:
        (kitchen,) = registry.instances("Kitchen")
    assert isinstance(kitchen, Instance)
    assert kitchen.address.startswith("tcp://127.0.0.1:")
    assert [m.name for m in kitchen.methods] == [
        "greet",
        "later",
        "count",
        "fail",
        "stall",
        "total_calls",
    ]
    assert kitchen.methods[0].doc == "Say hello."
    assert kitchen.pid > 0
    assert kitchen.host
    assert kitchen.alive()


def test_a_closed_proxy_says_so(hosted):
    kitchen = ServiceModule.discover("Kitchen", timeout=WAIT)
    kitchen.close()
    with pytest.raises(ConnectionClosed, match="closed"):
        kitchen.total_calls()


def test_calls_go_on_while_the_registry_cannot_be_read(hosted, monkeypatch):
    with ServiceModule.discover("Kitchen", timeout=WAIT, refresh=0.0) as kitchen:

        def unreadable(self: Registry, service: str) -> list[Instance]:
            raise BackendError("registry down (simulated)")

        monkeypatch.setattr(Registry, "instances", unreadable)
        assert kitchen.greet("x") == "hello x!"  # each call tries to refresh, and may not


def test_bad_ttls_and_names_are_refused_at_once():
    with pytest.raises(ConfigError, match="ttl must be a positive number"):
        ServiceHost([Plain()], ttl=-1)
    with pytest.raises(ConfigError, match="ttl must be a positive number"):
        ServiceHost([Plain()], ttl=0)
    with pytest.raises(ConfigError, match="neither an address"):
        undertow.connect("127.0.0.1")


def test_a_host_stopped_before_it_serves_does_not_serve():
    host = ServiceHost([Plain()], quiet=True)
    host.stop()
    asyncio.run(asyncio.wait_for(host.serve(), WAIT))  # returns at once
    with Registry() as registry:
        assert registry.all_instances() == []


def test_loopback_addresses_of_other_hosts_are_not_used():
    now = time.time()
    far = Instance(
        service="Far",
        id="far-1",
        addresses=["tcp://127.0.0.1:1"],  # that host's own loopback
        host="another-host.example",
        started=now,
        heartbeat=now,
        ttl=30,
    )
    with Registry() as registry:
        registry.register(far)
    with pytest.raises(ServiceNotFound, match="loopback addresses of other hosts"):
        ServiceModule.discover("Far", timeout=0.2)
