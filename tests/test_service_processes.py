"""Services as users run them: ``python -m undertow.service FILE`` and ``undertow serve`` in
processes of their own, clients in others, the registry in a SQLite file or a redis-server."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from undertow.cluster import Registry
from undertow.errors import ConnectionLost, NotConnected
from undertow.security import new_token
from undertow.service import ServiceModule
from undertow.transport import keygen, load_public

from ._processes import READY_TIMEOUT, ServedProcess, free_port, is_stopped
from ._waiting import wait_until

pytestmark = pytest.mark.multiproc

#: every interface: what the tests of the insecure flag serve on
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - the point of those tests
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CLIENT_TIMEOUT = 60.0


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., ServedProcess]]:
    """Start service processes (``python -m undertow.service ...``); stop them afterwards."""
    started: list[ServedProcess] = []

    def start(*args: str, services: int = 1, cli: bool = False) -> ServedProcess:
        command = (
            [sys.executable, "-m", "undertow.cli", "serve"]
            if cli
            else [sys.executable, "-m", "undertow.service"]
        )
        launched = ServedProcess([*command, *args], cwd=tmp_path, lines=services)
        started.append(launched)
        return launched

    yield start
    for launched in started:
        launched.stop()


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False
    )


# -- the seed example ---------------------------------------------------------------------------


def test_the_memkv_example_runs_unchanged_with_a_token_and_refuses_callers_without(
    tmp_path, launch, monkeypatch
):
    # the service and its clients find the token in the environment, so the file is unchanged
    monkeypatch.setenv("UNDERTOW_TOKEN", new_token("researcher"))
    shutil.copy(EXAMPLES / "memkv" / "memkv.py", tmp_path / "memkv.py")
    launch("memkv.py")
    puts = run([sys.executable, "memkv.py"], tmp_path)
    assert puts.returncode == 0, puts.stderr
    status = run([sys.executable, "-m", "undertow.cli", "status", "--json"], tmp_path)
    assert [i["security"] for i in json.loads(status.stdout)["instances"]] == ["tokens"]
    anonymous = textwrap.dedent(
        """
        from undertow.service import ServiceModule
        ServiceModule.discover("MemKeyValue", timeout=30, token=False).size()
        """
    )
    refused = run([sys.executable, "-c", anonymous], tmp_path)
    assert refused.returncode == 1
    assert "AuthenticationError" in refused.stderr
    assert "requires authentication" in refused.stderr


def test_the_memkv_example_runs_unchanged_and_keeps_its_state_between_clients(tmp_path, launch):
    shutil.copy(EXAMPLES / "memkv" / "memkv.py", tmp_path / "memkv.py")
    launch("memkv.py")
    # the file as a script: its __main__ block discovers the service and makes 10,000 puts
    puts = run([sys.executable, "memkv.py"], tmp_path)
    assert puts.returncode == 0, puts.stderr
    # a second, separate client process sees them all
    check = textwrap.dedent(
        """
        from undertow.service import ServiceModule
        kv = ServiceModule.discover("MemKeyValue", timeout=30)
        print(kv.size(), kv.get(key=9999), kv.get(key=10000, default="none"))
        """
    )
    seen = run([sys.executable, "-c", check], tmp_path)
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.split() == ["10000", str(9999 * 9999), "none"]


# -- launching ----------------------------------------------------------------------------------

SERVICES = '''
import os
import threading
from pathlib import Path
from undertow.service import Expose

import helper  # a neighbour of this file: its directory is on sys.path

@Expose()
class Echo:
    @Expose()
    def pid(self):
        return os.getpid()

    @Expose()
    def stall(self, seconds):
        print("stalling", flush=True)
        threading.Event().wait(seconds)  # busy for that long

    @Expose()
    def echo(self, x):
        """Give x back."""
        print("echoing", x)
        return helper.same(x)

@Expose(name="Adder")
class Add:
    @Expose()
    def add(self, a, b=1):
        return a + b

if __name__ == "__main__":
    Path("main-block-ran").write_text("the launcher must import, not run, this file")
'''


@pytest.fixture
def services_file(tmp_path: Path) -> Path:
    (tmp_path / "helper.py").write_text("def same(x):\n    return x\n")
    path = tmp_path / "services.py"
    path.write_text(SERVICES)
    return path


def test_the_launcher_imports_the_file_and_serves_every_exposed_class(
    tmp_path, services_file, launch
):
    launched = launch(services_file.name, services=2)
    assert not (tmp_path / "main-block-ran").exists()
    with ServiceModule.discover("Echo", timeout=READY_TIMEOUT) as echo:
        assert echo.echo(5) == 5
        assert echo.echo.__doc__ == "Give x back."
    with ServiceModule.discover("Adder", timeout=READY_TIMEOUT) as adder:
        assert adder.add(2) == 3
        assert adder.instances[0].address in launched.addresses
    assert launched.stop() == 0
    with Registry() as registry:
        assert registry.all_instances() == []  # a clean stop deregisters at once


def test_undertow_serve_takes_options(tmp_path, services_file, launch):
    (tmp_path / "one.py").write_text(SERVICES.replace('@Expose(name="Adder")', ""))
    port = free_port()
    launched = launch(
        "one",  # a module name this time, found on the path like any import
        "--name",
        "Renamed",
        "--ttl",
        "4",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cli=True,
    )
    assert launched.addresses == [f"tcp://127.0.0.1:{port}"]
    with Registry() as registry:
        (record,) = registry.all_instances()
    assert (record.service, record.ttl) == ("Renamed", 4.0)
    done = run([sys.executable, "-m", "undertow.cli", "call", "Renamed.echo", '"hi"'], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["echoing hi", '"hi"']  # remote output, then the result


def test_serving_beyond_loopback_without_tokens_takes_insecure_and_warns(
    tmp_path, services_file, launch
):
    refused = run(
        [sys.executable, "-m", "undertow.service", "services.py", "--host", ALL_INTERFACES],
        tmp_path,
    )
    assert refused.returncode == 2
    assert "without authentication" in refused.stderr
    assert "--insecure" in refused.stderr
    launched = launch(
        services_file.name,
        "--host",
        ALL_INTERFACES,
        "--advertise",
        "127.0.0.1",
        "--insecure",
        services=2,
    )
    with ServiceModule.discover("Echo", timeout=READY_TIMEOUT) as echo:
        assert echo.echo(3) == 3
    assert launched.stop() == 0
    assert b"WITHOUT authentication" in launched.stderr


def test_a_curve_service_registers_its_public_key_and_discovery_uses_it(
    tmp_path, services_file, launch
):
    public, secret = keygen(tmp_path / "keys", "services")
    launch(services_file.name, "--curve-secret", str(secret), services=2)
    with ServiceModule.discover("Echo", timeout=READY_TIMEOUT) as echo:
        assert echo.echo(7) == 7
        assert echo.instances[0].curve_key == load_public(public)
    status = run([sys.executable, "-m", "undertow.cli", "status", "--json"], tmp_path)
    assert {i["security"] for i in json.loads(status.stdout)["instances"]} == {"curve"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import no_such_module_here\n", "ModuleNotFoundError: No module named"),
        ("def broken(:\n", "SyntaxError"),
        ("x = 1\n", "defines no service"),
        (
            "from undertow.service import Expose\n"
            "@Expose()\nclass Needs:\n    def __init__(self, arg): pass\n"
            "    @Expose()\n    def f(self): pass\n",
            "callable with no arguments",
        ),
    ],
)
def test_a_file_that_cannot_be_served_is_reported_with_a_non_zero_exit(tmp_path, source, expected):
    (tmp_path / "bad.py").write_text(source)
    done = run([sys.executable, "-m", "undertow.service", "bad.py"], tmp_path)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "bad.py" in done.stderr


def test_a_killed_service_disappears_within_its_ttl(tmp_path, services_file, launch):
    launched = launch(services_file.name, "--ttl", "1", services=2)
    with Registry() as registry:
        assert len(registry.all_instances()) == 2
        launched.stop(signal.SIGKILL)  # no chance to deregister
        killed = time.monotonic()
        assert wait_until(lambda: registry.all_instances() == [], 1.0 + 5.0)
        assert time.monotonic() - killed < 1.0 + 1.0  # its TTL, plus a look's slack


def test_calls_spread_over_instances_and_fail_over_when_one_dies(
    services_file, launch, monkeypatch
):
    first = launch(services_file.name, services=2)
    second = launch(services_file.name, services=2)
    with ServiceModule.discover("Echo", timeout=READY_TIMEOUT, refresh=0.2) as echo:
        assert len(echo.instances) == 2
        assert {echo.pid() for _ in range(6)} == {first.proc.pid, second.proc.pid}
        (dead,) = [i for i in echo.instances if i.pid == first.proc.pid]
        # a call waits its connect_wait (0.5 s) for an instance exactly when it finds it
        # unreachable and drops it: counting drops, not timing calls, which a loaded machine
        # slows down whatever the proxy does
        drops: list[str] = []
        drop = echo._drop

        def counted(instance: Any) -> None:
            drops.append(instance.id)
            drop(instance)

        monkeypatch.setattr(echo, "_drop", counted)
        first.stop(signal.SIGKILL)  # dies without deregistering: still listed for its TTL
        calls = lost = 0
        until = time.monotonic() + 1.5  # several refreshes, while the registry still lists it
        while time.monotonic() < until or calls < 20:
            calls += 1
            try:
                assert echo.pid() == second.proc.pid  # no error, no action needed ...
            except ConnectionLost:  # ... unless a call went out before the drop was seen
                lost += 1
        assert lost <= 1
        assert drops == [dead.id]  # one call waited for the dead one; the refreshes kept it out
        with Registry() as registry:  # ... although the registry lists it all along (TTL 10 s)
            assert dead.id in {i.id for i in registry.instances("Echo")}
        assert [i.address for i in echo.instances] == second.addresses[:1]
        third = launch(services_file.name, services=2)  # a new instance is picked up
        assert wait_until(lambda: echo.pid() == third.proc.pid, READY_TIMEOUT)
        futures = [echo.pid.submit() for _ in range(6)]  # futures are spread too
        assert {f.result(READY_TIMEOUT) for f in futures} == {second.proc.pid, third.proc.pid}


def test_an_instance_that_stalls_is_used_again_once_it_beats(services_file, launch):
    # a TTL long enough that the stalled instance is still listed when the new connection is
    # refused (connect_wait 0.5 s), even on a loaded machine; else the proxy, seeing no
    # instance at all, would wait for one to come back
    launched = launch(services_file.name, "--ttl", "4", services=2)
    stalling = threading.Event()

    def watch(stream: str, text: str) -> None:
        if "stalling" in text:
            stalling.set()

    with ServiceModule.discover("Echo", timeout=READY_TIMEOUT, refresh=0.2, output=watch) as echo:
        slow_call: list[Any] = []
        running = threading.Thread(target=lambda: slow_call.append(echo.stall(1.0)))
        running.start()  # a call that is running when the instance stalls
        assert stalling.wait(READY_TIMEOUT)
        launched.proc.send_signal(signal.SIGSTOP)
        try:
            assert wait_until(lambda: is_stopped(launched.proc.pid), READY_TIMEOUT)
            # a new thread needs a new connection, which a stopped process cannot complete
            refused: list[BaseException] = []
            caller = threading.Thread(target=lambda: _call_into(echo.pid, refused))
            caller.start()
            caller.join(READY_TIMEOUT)
            assert [type(e) for e in refused] == [NotConnected]
        finally:
            launched.proc.send_signal(signal.SIGCONT)
        running.join(READY_TIMEOUT)
        assert slow_call == [None]  # the call in flight was not cut off by the failover
        # it heartbeats again, so it is tried again
        assert wait_until(lambda: _succeeds(echo.pid), READY_TIMEOUT)


def _call_into(fn: Callable[[], Any], errors: list[BaseException]) -> None:
    try:
        fn()
    except Exception as exc:
        errors.append(exc)


def _succeeds(fn: Callable[[], Any]) -> bool:
    try:
        fn()
    except NotConnected:
        return False
    return True


# -- ops from the shell -----------------------------------------------------------------------


def test_status_shows_services_in_a_table_and_as_json(tmp_path, services_file, launch):
    launched = launch(services_file.name, services=2)
    table = run([sys.executable, "-m", "undertow.cli", "status"], tmp_path)
    assert table.returncode == 0, table.stderr
    services, _, workers = table.stdout.partition("\n\n")  # services, then workers
    header, *rows = services.splitlines()[1:]
    assert workers.startswith("workers: none live")
    assert header.split() == [
        "SERVICE",
        "INSTANCES",
        "ADDRESS",
        "HOST",
        "PID",
        "UPTIME",
        "HEARTBEAT",
        "HEALTH",
        "SECURITY",
    ]
    assert sorted(row.split()[0] for row in rows) == ["Adder", "Echo"]
    assert all(row.split()[-1] == "none" for row in rows)
    as_json = run([sys.executable, "-m", "undertow.cli", "status", "--json"], tmp_path)
    listed = json.loads(as_json.stdout)
    assert listed["backend"].startswith("sqlite:///")
    assert sorted(i["address"] for i in listed["instances"]) == sorted(launched.addresses)
    assert {i["pid"] for i in listed["instances"]} == {launched.proc.pid}
    assert all(i["health"] == "ok" for i in listed["instances"])
    assert all(i["security"] == "none" for i in listed["instances"])


def test_call_passes_arguments_and_shows_remote_errors(tmp_path, services_file, launch):
    launch(services_file.name, services=2)
    cli = [sys.executable, "-m", "undertow.cli", "call"]
    done = run([*cli, "Adder.add", "2", "b=40"], tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, "42")
    done = run([*cli, "Adder.add", "[1]", "b=[2, 3]"], tmp_path)
    assert done.stdout.strip() == "[1,2,3]"
    failed = run([*cli, "Adder.add", '"text"'], tmp_path)  # "text" + 1 fails remotely
    assert failed.returncode == 1
    assert "TypeError" in failed.stderr
    assert "Traceback" in failed.stderr  # the remote traceback
    missing = run([*cli, "Nobody.add", "--wait", "0.2"], tmp_path)
    assert missing.returncode == 1
    assert "no live instance of service 'Nobody'" in missing.stderr


# -- Redis ---------------------------------------------------------------------------------------


def test_services_register_in_redis_for_several_machines(
    tmp_path, services_file, launch, redis_url, monkeypatch
):
    url = redis_url
    launch(services_file.name, "--backend", url, services=2)
    with ServiceModule.discover("Adder", backend=url, timeout=READY_TIMEOUT) as adder:
        assert adder.add(1, 2) == 3
    with Registry() as local:
        assert local.all_instances() == []  # nothing went to the embedded file
    monkeypatch.setenv("UNDERTOW_BACKEND", url)  # the environment chooses it too
    as_json = run([sys.executable, "-m", "undertow.cli", "status", "--json"], tmp_path)
    listed = json.loads(as_json.stdout)
    assert listed["backend"] == url
    assert sorted(i["service"] for i in listed["instances"]) == ["Adder", "Echo"]
    assert os.environ["UNDERTOW_BACKEND"] == url


def test_undertow_serve_http_registers_an_http_address_that_curl_can_call(
    tmp_path, services_file, launch
):
    launch(services_file.name, "--http", "0", services=2, cli=True)
    with Registry() as registry:
        (echo,) = [i for i in registry.all_instances() if i.service == "Echo"]
    zmq_address, http_address = echo.addresses
    assert zmq_address.startswith("tcp://127.0.0.1:")
    assert http_address.startswith("http://127.0.0.1:")
    done = run(
        [
            "curl",
            "-sS",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"args": ["hi"]}',
            f"{http_address}/call/echo",
        ],
        tmp_path,
    )
    assert (done.returncode, done.stdout) == (0, '"hi"')


def test_undertow_serve_metrics_serves_each_services_figures(tmp_path, services_file, launch):
    launched = launch(services_file.name, "--metrics", "0", services=2, cli=True)
    urls = [re.search(r"metrics (http://\S+/metrics)\)", line) for line in launched.lines]
    assert all(urls), launched.lines
    with ServiceModule.discover("Echo", timeout=READY_TIMEOUT) as echo:
        for i in range(3):
            assert echo.echo(i) == i
    scraped = {}
    for found in urls:
        assert found is not None
        assert found.group(1).startswith("http://127.0.0.1:")  # the services' own host
        text = httpx.get(found.group(1), timeout=CLIENT_TIMEOUT).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "undertow_calls_total":
                    scraped[(sample.labels["server"], sample.labels["function"])] = sample.value
    assert scraped[("Echo", "echo")] == 3
    assert ("Adder", "echo") not in scraped  # each service counts its own calls
