"""The same functions over HTTP, called with the real curl binary."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

import undertow
from undertow.security import TokenAuth, allow

WAIT = 10.0
ALICE = "alice.Ak3xV9mQ2rT7yU1iO5pL8sD4fG6hJ0zC"
BOB = "bob.Bq8wE2rT6yU0iO4pA7sD1fG5hJ9kL3zX"
#: the real programs the tests call (.ci/system-deps installs them when missing)
CURL = shutil.which("curl") or "curl"
NODE = shutil.which("node") or "node"


def add(x: int, y: int = 1) -> int:
    """Add two numbers."""
    return x + y


def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


def rows(n: int) -> Iterator[dict[str, int]]:
    for i in range(n):
        yield {"i": i}


async def aecho(value: Any) -> Any:
    return value


def make_server(**options: Any) -> undertow.Server:
    server = undertow.Server(name="web", **options)
    for fn in (add, divide, rows, aecho):
        server.register(fn.__name__, fn)
    server.register("admin_reset", lambda: "reset")
    return server


@pytest.fixture
def http() -> Iterator[Any]:
    """Start servers with HTTP on a free port; stop them after the test."""
    started: list[undertow.Server] = []

    def start(server: undertow.Server) -> str:
        started.append(server)
        server.start(http_port=0)
        return server.http_address

    yield start
    for server in started:
        server.stop()


def curl(*args: str) -> tuple[int, dict[str, Any] | Any, str]:
    """Run curl; returns (HTTP status, the body as JSON if it is JSON, the raw body)."""
    done = subprocess.run(
        [CURL, "-sS", "-w", "\n%{http_code}", "--max-time", str(WAIT), *args],
        capture_output=True,
        text=True,
        timeout=WAIT + 5,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    return int(status), parsed, body


def post(url: str, body: Any, *headers: str) -> tuple[int, Any, str]:
    extra = [arg for header in headers for arg in ("-H", header)]
    return curl(
        "-X", "POST", "-H", "Content-Type: application/json", *extra, "-d", json.dumps(body), url
    )


def test_curl_calls_a_function_with_json(http) -> None:
    base = http(make_server())
    assert post(f"{base}/call/add", {"args": [2, 3]})[:2] == (200, 5)
    assert post(f"{base}/call/add", {"kwargs": {"x": 2, "y": 40}})[:2] == (200, 42)
    assert post(f"{base}/call/add", [7])[:2] == (200, 8)  # a bare list: positional arguments
    assert post(f"{base}/call/aecho", {"args": [{"k": [1, None]}]})[:2] == (200, {"k": [1, None]})
    assert post(f"{base}/call/rows", {"args": [3]})[:2] == (200, [{"i": 0}, {"i": 1}, {"i": 2}])


def test_curl_asks_for_a_pointer_to_the_result_with_a_header(http) -> None:
    base = http(make_server())
    flag = "X-Undertow-Return-Pointer"
    status, form, _ = post(f"{base}/call/aecho", {"args": [[1, 2, 3]]}, f"{flag}: 1")
    assert status == 200
    assert (form["type"], form["protocol"], form["path"]) == (
        "undertow.pointer",
        "http",
        f"/data/{form['key']}",
    )
    secret = f"X-Undertow-Secret: {form['secret_key']}"
    assert curl("-H", secret, f"{base}{form['path']}")[:2] == (200, [1, 2, 3])
    lines = post(f"{base}/call/rows", {"args": [2]}, f"{flag}: 1", "Accept: application/x-ndjson")
    items = [json.loads(line)["item"] for line in lines[2].splitlines()[:2]]
    assert [item["type"] for item in items] == ["undertow.pointer"] * 2
    assert post(f"{base}/call/add", {"args": [1]}, f"{flag}: 0")[:2] == (200, 2)
    status, body, _ = post(f"{base}/call/add", {"args": [1]}, f"{flag}: maybe")
    assert status == 400
    assert "'maybe' is not a flag" in body["error"]["message"]


def test_errors_map_to_statuses_with_a_json_body(http) -> None:
    base = http(make_server())
    status, body, _ = post(f"{base}/call/divide", {"args": [1, 0]})
    assert status == 500
    assert body["error"]["type"] == "builtins.ZeroDivisionError"
    assert "in divide" in body["error"]["traceback"]
    status, body, _ = post(f"{base}/call/nope", {})
    assert status == 404
    assert body["error"]["available"] == ["add", "admin_reset", "aecho", "divide", "rows"]
    status, body, _ = post(f"{base}/call/add", {"args": [1, 2, 3, 4]})
    assert (status, body["error"]["type"]) == (500, "builtins.TypeError")
    status, body, _ = curl(
        "-X", "POST", "-H", "Content-Type: application/json", "-d", "{oops", f"{base}/call/add"
    )
    assert status == 400
    assert "not application/json" in body["error"]["message"]
    status, body, _ = curl(
        "-X", "POST", "-H", "Content-Type: text/csv", "-d", "1,2", f"{base}/call/add"
    )
    assert status == 415


def test_functions_are_listed_as_json_and_as_a_page(http) -> None:
    base = http(make_server())
    status, body, _ = curl(f"{base}/functions")
    assert status == 200
    listed = {f["name"]: f for f in body["functions"]}
    assert listed["add"]["doc"] == "Add two numbers."
    assert [p[0] for p in listed["add"]["params"]] == ["x", "y"]
    assert listed["rows"]["mode"] == "generator"
    status, _, page = curl(f"{base}/")
    assert status == 200
    assert "add(x: int, y: int = 1)" in page
    assert "Add two numbers." in page


def test_functions_say_what_a_zeromq_client_is_told_on_connect(http) -> None:
    server = make_server(auth=TokenAuth([ALICE]), max_message_size=65536)
    base = http(server)
    status, body, _ = curl("-H", f"Authorization: Bearer {ALICE}", f"{base}/functions")
    assert status == 200
    # every field, functions as dicts
    assert body == msgspec.json.decode(msgspec.json.encode(server.description()))
    assert (body["server"], body["authenticates"], body["max_message_size"]) == ("web", True, 65536)
    with (
        undertow.connect(base, timeout=WAIT, token=ALICE) as over_http,
        undertow.connect(server.address, timeout=WAIT, token=ALICE) as over_zmq,
    ):
        assert over_http._conn.describe(WAIT) == over_zmq._conn.describe(WAIT)


def test_bearer_tokens_use_the_servers_authenticator_and_rules(http) -> None:
    server = make_server(auth=TokenAuth([ALICE, BOB]))
    server.config({"admin_*": {"auth": allow("alice")}})
    base = http(server)
    status, body, _ = post(f"{base}/call/add", {"args": [1]})
    assert status == 401
    assert "Bearer" in body["error"]["message"]
    assert post(f"{base}/call/add", {"args": [1]}, f"Authorization: Bearer {BOB}")[:2] == (200, 2)
    status, body, _ = post(f"{base}/call/admin_reset", {}, f"Authorization: Bearer {BOB}")
    assert status == 403
    assert "'bob' may not call admin_reset()" in body["error"]["message"]
    assert post(f"{base}/call/admin_reset", {}, f"Authorization: Bearer {ALICE}")[:2] == (
        200,
        "reset",
    )
    status, _, _ = post(
        f"{base}/call/add", {"args": [1]}, "Authorization: Bearer bob.wrongwrongwrongwrongwrong"
    )
    assert status == 401
    assert curl(f"{base}/functions")[0] == 401


def test_a_body_over_the_limit_is_refused_and_cors_stays_closed(http) -> None:
    base = http(make_server(max_message_size=65536))
    status, body, _ = post(f"{base}/call/aecho", {"args": ["x" * 70_000]})
    assert status == 413
    assert body["error"]["code"] == "too_large"
    assert post(f"{base}/call/add", {"args": [1]})[:2] == (200, 2)
    done = subprocess.run(
        [CURL, "-sS", "-i", "-H", "Origin: http://evil.example", f"{base}/functions"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    assert "access-control-allow-origin" not in done.stdout.lower()


def test_curl_sees_prints_and_items_while_the_call_runs(http) -> None:
    server = make_server()
    gate = threading.Event()

    @server.register
    def progress(n: int) -> Iterator[int]:
        print("started", flush=True)
        assert gate.wait(WAIT)  # goes on only once the caller has seen the first line
        for i in range(n):
            print(f"step {i}", flush=True)
            yield i * i

    base = http(server)
    with subprocess.Popen(
        [
            CURL,
            "-sS",
            "-N",
            "--max-time",
            str(WAIT),
            "-H",
            "Accept: application/x-ndjson",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"args": [3]}',
            f"{base}/call/progress",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert json.loads(first) == {"stdout": "started\n"}  # live: the call is still waiting
        gate.set()
        rest = [json.loads(line) for line in proc.stdout]
    assert rest == [
        {"stdout": "step 0\n"},
        {"item": 0},
        {"stdout": "step 1\n"},
        {"item": 1},
        {"stdout": "step 2\n"},
        {"item": 4},
        {"end": True},
    ]


def test_a_stream_ends_with_the_result_or_the_error_and_sse_works_too(http) -> None:
    server = make_server()

    @server.register
    def shout(text: str) -> str:
        print(text.upper())
        if text == "boom":
            raise ValueError("no booms")
        return text + "!"

    base = http(server)
    ndjson = "Accept: application/x-ndjson"
    _, _, body = post(f"{base}/call/shout", {"args": ["hi"]}, ndjson)
    assert [json.loads(line) for line in body.splitlines()] == [
        {"stdout": "HI\n"},
        {"result": "hi!"},
    ]
    _, _, body = post(f"{base}/call/shout", {"args": ["boom"]}, ndjson)
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines[0] == {"stdout": "BOOM\n"}
    assert lines[1]["error"]["type"] == "builtins.ValueError"
    status, _, _ = post(f"{base}/call/missing", {}, ndjson)
    assert status == 404  # a call that cannot start still gets its status
    _, _, body = post(f"{base}/call/shout", {"args": ["hi"]}, "Accept: text/event-stream")
    assert body.split("\n\n")[:2] == ['event: stdout\ndata: "HI\\n"', 'event: result\ndata: "hi!"']


def test_a_node_program_calls_a_function_with_fetch(http) -> None:
    server = make_server(auth=TokenAuth([ALICE]))
    base = http(server)
    script = f"""
    const response = await fetch("{base}/call/add", {{
        method: "POST",
        headers: {{"Content-Type": "application/json", "Authorization": "Bearer {ALICE}"}},
        body: JSON.stringify({{args: [40], kwargs: {{y: 2}}}}),
    }});
    const listed = await (await fetch("{base}/functions", {{
        headers: {{"Authorization": "Bearer {ALICE}"}},
    }})).json();
    console.log(JSON.stringify({{status: response.status, result: await response.json(),
                                 names: listed.functions.map((f) => f.name)}}));
    """
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=WAIT + 20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "status": 200,
        "result": 42,
        "names": ["add", "divide", "rows", "aecho", "admin_reset"],
    }


def test_the_openapi_document_is_valid_and_describes_each_function(http) -> None:
    import openapi_spec_validator as validator

    server = make_server(auth=TokenAuth([ALICE]), allow_anonymous=True)

    @server.register
    def scale(values: list[float], factor: float = 2.0, *, note: str | None = None) -> list[float]:
        """Multiply every value."""
        return [v * factor for v in values]

    base = http(server)
    status, document, _ = curl(f"{base}/openapi.json")
    assert status == 200
    validator.validate(document)  # raises if it is not a valid OpenAPI document
    operation = document["paths"]["/call/scale"]["post"]
    assert operation["summary"] == "Multiply every value."
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    kwargs = schema["properties"]["kwargs"]["properties"]
    assert kwargs["values"]["type"] == "array"
    assert kwargs["factor"]["type"] == "number"
    assert kwargs["note"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert len(schema["properties"]["args"]["prefixItems"]) == 2  # note is keyword-only
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"type": "array"}
    assert document["security"] == [{"bearer": []}]
    (flag,) = operation["parameters"]
    assert (flag["name"], flag["in"]) == ("X-Undertow-Return-Pointer", "header")
    assert set(document["paths"]) == {
        f"/call/{n}" for n in ("add", "divide", "rows", "aecho", "admin_reset", "scale")
    }


def test_a_slow_client_does_not_hold_up_others(http) -> None:
    import socket
    from urllib.parse import urlsplit

    base = http(make_server())
    where = urlsplit(base)
    slow = socket.create_connection((where.hostname, where.port), timeout=WAIT)
    silent = socket.create_connection((where.hostname, where.port), timeout=WAIT)
    try:
        request = b"POST /call/add HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        for i in range(10):
            slow.sendall(request[i * 8 : (i + 1) * 8])  # a few bytes at a time, never finished
            assert post(f"{base}/call/add", {"args": [i]})[:2] == (200, i + 1)
    finally:
        slow.close()
        silent.close()


def test_pickle_travels_over_http_only_for_a_caller_with_a_token(http, tmp_path) -> None:
    import pickle

    class Touch:
        def __reduce__(self) -> Any:
            return (open, (str(tmp_path / "pwned"), "w"))

    server = make_server(auth=TokenAuth([ALICE]), allow_anonymous=True)
    server.register("total_np", lambda values: sum(values))
    server.config({"*_np": {"input_serialization": "pickle"}})
    base = http(server)
    (tmp_path / "args.pkl").write_bytes(pickle.dumps(([[1, 2, 3]], {})))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(([Touch()], {})))
    pickled = ["-X", "POST", "-H", "Content-Type: application/python-pickle"]
    status, body, _ = curl(
        *pickled, "--data-binary", f"@{tmp_path / 'evil.pkl'}", f"{base}/call/total_np"
    )
    assert status == 401  # anonymous: refused before anything is unpickled
    assert not (tmp_path / "pwned").exists()
    status, body, _ = curl(
        *pickled,
        "-H",
        f"Authorization: Bearer {ALICE}",
        "--data-binary",
        f"@{tmp_path / 'args.pkl'}",
        f"{base}/call/total_np",
    )
    assert (status, body) == (200, 6)
    status, body, _ = curl(
        *pickled,
        "-H",
        f"Authorization: Bearer {ALICE}",
        "--data-binary",
        f"@{tmp_path / 'args.pkl'}",
        f"{base}/call/add",
    )
    assert status == 415  # add() takes msgpack: a pickle is not even looked at


# -- the Python client of an HTTP address ---------------------------------------------------


def test_connect_to_an_http_address_gives_the_same_client_api(http) -> None:
    import inspect

    server = make_server()
    release = threading.Event()

    @server.register
    def chatty(n: int) -> int:
        """Print n lines, then return n."""
        for i in range(n):
            print(f"line {i}")
        return n

    @server.register
    def slow() -> None:
        assert release.wait(WAIT)

    base = http(server)
    heard: list[tuple[str, str]] = []
    with undertow.connect(base, timeout=WAIT, output=lambda s, t: heard.append((s, t))) as client:
        assert str(inspect.signature(client.add)) == "(x: int, y: int = 1) -> int"
        assert client.add.__doc__ == "Add two numbers."
        assert "divide" in dir(client)
        assert client.add(2, y=40) == 42
        assert client.chatty(2) == 2
        assert heard == [("stdout", "line 0\n"), ("stdout", "line 1\n")]
        assert list(client.rows(3)) == [{"i": 0}, {"i": 1}, {"i": 2}]
        futures = [client.add.submit(i) for i in range(5)]
        assert [f.result(WAIT) for f in futures] == [1, 2, 3, 4, 5]
        with pytest.raises(ZeroDivisionError) as info:
            client.divide(1, 0)
        assert "in divide" in str(info.value.__cause__)
        with pytest.raises(undertow.FunctionNotFound):
            client.call("missing")
        with pytest.raises(undertow.RPCTimeout, match="slow"):
            client.slow.options(timeout=0.3)()
        release.set()


def test_the_http_client_authenticates_with_its_token(http) -> None:
    server = make_server(auth=TokenAuth([ALICE, BOB]))
    server.config({"admin_*": {"auth": allow("alice")}})
    base = http(server)
    with pytest.raises(undertow.AuthenticationError):
        undertow.connect(base, timeout=WAIT, token=False)
    with undertow.connect(base, timeout=WAIT, token=BOB) as bob:
        assert bob.add(1) == 2
        with pytest.raises(undertow.PermissionDenied, match="admin_reset"):
            bob.admin_reset()


async def test_the_async_http_client(http) -> None:
    base = http(make_server())
    client = await undertow.connect_async(base, timeout=WAIT)
    try:
        assert await client.add(2, 3) == 5
        assert await client.submit("add", 1) == 2
        assert [row async for row in client.rows(2)] == [{"i": 0}, {"i": 1}]
        with pytest.raises(ZeroDivisionError):
            await client.divide(1, 0)
    finally:
        await client.aclose()


async def test_the_async_http_client_keeps_deadlines(http) -> None:
    server = make_server()
    release = threading.Event()

    @server.register
    def slow() -> None:
        assert release.wait(WAIT)

    base = http(server)
    client = await undertow.connect_async(base, timeout=WAIT)
    try:
        with pytest.raises(undertow.RPCTimeout, match="slow"):
            await client.slow.options(timeout=0.3)()
        assert await client.add(1) == 2  # the client is still usable
    finally:
        release.set()
        await client.aclose()


def test_msgpack_and_pickle_bodies_and_results_are_chosen_by_content_type_and_accept(
    http, tmp_path
) -> None:
    import pickle

    import msgspec

    server = make_server(auth=TokenAuth([ALICE]), allow_anonymous=True)
    server.register("concat", lambda a, b: a + b)
    base = http(server)
    (tmp_path / "body.msgpack").write_bytes(msgspec.msgpack.encode({"args": [b"ab", b"cd"]}))
    done = subprocess.run(
        [
            CURL,
            "-sS",
            "-H",
            "Content-Type: application/msgpack",
            "-H",
            "Accept: application/msgpack",
            "--data-binary",
            f"@{tmp_path / 'body.msgpack'}",
            f"{base}/call/concat",
        ],
        capture_output=True,
        timeout=WAIT,
        check=True,
    )
    assert msgspec.msgpack.decode(done.stdout) == b"abcd"  # bytes, which JSON cannot carry
    ask_pickle = ["-H", "Accept: application/python-pickle", "--json", '{"args": [2, 3]}']
    anonymous = subprocess.run(
        [CURL, "-sS", *ask_pickle, f"{base}/call/add"],
        capture_output=True,
        timeout=WAIT,
        check=True,
    )
    assert anonymous.stdout == b"5"  # no token: JSON, never a pickle
    signed = subprocess.run(
        [CURL, "-sS", "-H", f"Authorization: Bearer {ALICE}", *ask_pickle, f"{base}/call/add"],
        capture_output=True,
        timeout=WAIT,
        check=True,
    )
    assert pickle.loads(signed.stdout) == 5


# -- what a hostile web page or client could try --------------------------------------------


def test_a_page_from_another_site_cannot_make_a_call(http) -> None:
    server = make_server()
    ran: list[int] = []
    server.register("record", lambda: ran.append(1))
    base = http(server)
    # a "simple" cross-site POST: no Content-Type a page could not send without asking
    for content_type in ([], ["-H", "Content-Type: text/plain"]):
        status, body, _ = curl("-X", "POST", *content_type, "-d", "{}", f"{base}/call/record")
        assert status == 415
    # DNS rebinding: a name of the attacker's that points at 127.0.0.1
    status, body, _ = post(f"{base}/call/record", {}, "Host: evil.example")
    assert status == 403
    assert "localhost" in body["error"]["message"]
    assert ran == []
    assert post(f"{base}/call/record", {})[0] == 200
    assert ran == [1]


def test_http_beyond_loopback_needs_the_insecure_flag_even_with_tokens() -> None:
    all_interfaces = "tcp://0.0.0.0:0"
    server = make_server(auth=TokenAuth([ALICE]))
    with pytest.raises(undertow.ConfigError, match="TLS proxy"):
        server.start(all_interfaces, http_port=0)
    server = make_server(auth=TokenAuth([ALICE]), insecure=True)
    server.start(all_interfaces, http_port=0)
    try:
        assert server.http_address.startswith("http://0.0.0.0:")
    finally:
        server.stop()


def test_every_page_of_a_server_with_tokens_needs_one(http) -> None:
    base = http(make_server(auth=TokenAuth([ALICE])))
    for page in ("/", "/functions", "/openapi.json"):
        assert curl(f"{base}{page}")[0] == 401, page
        assert curl("-H", f"Authorization: Bearer {ALICE}", f"{base}{page}")[0] == 200, page


def test_a_client_that_hangs_up_stops_its_call(http) -> None:
    import asyncio

    server = make_server()
    started, stopped = threading.Event(), threading.Event()

    @server.register
    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    base = http(server)
    with subprocess.Popen(
        [CURL, "-sS", "--json", "{}", f"{base}/call/forever"], stdout=subprocess.DEVNULL
    ) as proc:
        assert started.wait(WAIT)
        proc.terminate()  # the client goes away mid-call
    assert stopped.wait(WAIT), "the call went on after its client left"


def test_an_endless_generator_asked_for_without_a_stream_is_cut_at_the_limit(http) -> None:
    server = make_server(max_message_size=65536)
    stopped = threading.Event()

    @server.register
    def endless() -> Iterator[str]:
        try:
            while True:
                yield "x" * 1000
        finally:
            stopped.set()

    base = http(server)
    status, body, _ = post(f"{base}/call/endless", {})
    assert status == 413
    assert "stream them" in body["error"]["message"]
    assert stopped.wait(WAIT)


def test_statuses_for_timeouts_and_unsendable_results(http) -> None:
    server = make_server(auth=TokenAuth([ALICE]), allow_anonymous=True)
    release = threading.Event()

    @server.register
    def limited() -> None:
        release.wait(WAIT)

    server.register("huge_np", lambda: 2**70)
    server.config({"limited": {"timeout": 0.2}, "huge_np": {"output_serialization": "pickle"}})
    base = http(server)
    try:
        status, body, _ = post(f"{base}/call/limited", {})
        assert (status, body["error"]["code"]) == (504, "timeout")
    finally:
        release.set()
    auth = f"Authorization: Bearer {ALICE}"
    status, body, _ = post(f"{base}/call/huge_np", {}, auth, "Accept: application/msgpack")
    assert (status, body["error"]["code"]) == (500, "serialization")


def test_the_http_client_gives_each_item_of_a_stream_its_own_deadline(http) -> None:
    server = make_server()

    @server.register
    def ticks(n: int) -> Iterator[int]:
        for i in range(n):
            threading.Event().wait(0.1)  # an item takes that long to make
            yield i

    base = http(server)
    with undertow.connect(base, timeout=0.5) as client:
        assert list(client.ticks(8)) == list(range(8))  # 0.8 s in all, 0.1 s each
