"""The notebook experience through a real Jupyter kernel (tests/_kernel.py): where remote
output shows, rich HTML forms, help and completion on remote functions, a map's progress
widget, and remote tracebacks."""

from __future__ import annotations

import re
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._kernel import Kernel, plain
from ._processes import ChildServer

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow, pytest.mark.multiproc]

ROOT = Path(__file__).resolve().parent.parent

SERVER = """
import socket
import undertow

server = undertow.Server(name="nb")

@server.register
def hello(name: str, times: int = 1) -> str:
    \"\"\"Greet someone, printing on the way.

    The greeting is printed on the server and shows where the call was made.\"\"\"
    for _ in range(times):
        print(f"hello {name} from the server", flush=True)
    return name.upper()

@server.register
def late(port: int) -> int:
    \"\"\"Print, wait until the test opens the gate at ``port``, print again.\"\"\"
    print("late: started", flush=True)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as gate:
        gate.recv(1)
    print("late: finished", flush=True)
    return 1

@server.register
def explode(value: int) -> int:
    \"\"\"Fail with a ValueError.\"\"\"
    checked = value * 2
    raise ValueError(f"value {checked} is out of range")

server.serve_forever("127.0.0.1", 0)
"""


class Gate:
    """What a remote function (or job) waits at until the test opens it: a socket of the
    test's that the function connects to and reads one byte from. (Not a second call to
    the same server: the function's own server is not needed to let it go on.)"""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]

    def open(self, timeout: float = 60) -> None:
        """Let the function that connected (or connects within ``timeout``) go on."""
        self.listener.settimeout(timeout)
        conn, _ = self.listener.accept()
        with conn:
            conn.sendall(b"x")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    opened = Gate()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildServer]:
    child = ChildServer(SERVER, tmp_path_factory.mktemp("server"))
    yield child
    child.stop()


@pytest.fixture(scope="module")
def nb(tmp_path_factory: pytest.TempPathFactory, server: ChildServer) -> Iterator[Kernel]:
    """A kernel whose ``client`` is connected to the test server."""
    kernel = Kernel(tmp_path_factory.mktemp("kernel"), ROOT)
    try:
        kernel.run(f"import undertow\nclient = undertow.connect({server.address!r}, timeout=60)")
        yield kernel
    finally:
        kernel.shutdown()


def cell(code: str) -> str:
    return textwrap.dedent(code).strip()


def test_a_blocking_calls_output_shows_under_its_cell(nb: Kernel) -> None:
    msg_id = nb.run("print('before'); client.hello('ada', times=2)")
    assert nb.stream(msg_id) == "before\n" + "hello ada from the server\n" * 2
    kinds = [m["msg_type"] for m in nb.of_type(msg_id, "stream", "execute_result")]
    assert kinds[-1] == "execute_result"  # the output came before the result
    (result,) = nb.of_type(msg_id, "execute_result")
    assert result["content"]["data"]["text/plain"] == "'ADA'"


def test_a_futures_late_output_shows_under_the_cell_that_submitted_it(
    nb: Kernel, gate: Gate
) -> None:
    first = nb.run(f"future = client.late.submit({gate.port})")
    nb.pump_until(lambda: "late: started" in nb.stream(first), 30, "the first line")
    second = nb.start("print('B ran'); future.result(timeout=60)")  # B runs...
    gate.open()  # ... when late() goes on
    nb.wait(second)
    nb.pump_until(lambda: "late: finished" in nb.stream(first), 30, "the late line under A")
    assert nb.stream(first) == "late: started\nlate: finished\n"
    assert nb.stream(second) == "B ran\n"  # nothing of A's under B


JOB = """
def slow_job(port):
    import socket
    print("job started", flush=True)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as gate:
        gate.recv(1)
    print("job finished", flush=True)
    return 7
"""


@pytest.fixture(scope="module")
def cluster(nb: Kernel) -> Iterator[Kernel]:
    """The kernel with ``cluster``, an undertow.Cluster of one worker process (which
    knows the functions of tests/_cluster_jobs.py by name)."""
    started = (
        "cluster = undertow.Cluster(workers=1, concurrency=2, modules=['tests._cluster_jobs'])"
    )
    nb.run(started, timeout=180)
    try:
        yield nb
    finally:
        nb.run("cluster.close()", timeout=120)


def test_a_jobs_output_shows_under_the_cell_that_submitted_it(cluster: Kernel, gate: Gate) -> None:
    nb = cluster
    nb.run(cell(JOB))
    first = nb.run(f"job = cluster.submit(slow_job, {gate.port})")
    nb.pump_until(lambda: "job started" in nb.stream(first), 60, "the job's first line")
    second = nb.start("print('B ran'); job.result(timeout=60)")  # B runs...
    gate.open()  # ... when the job goes on
    nb.wait(second)
    nb.pump_until(lambda: "job finished" in nb.stream(first), 30, "the job's last line")
    assert nb.stream(first) == "job started\njob finished\n"
    assert nb.stream(second) == "B ran\n"  # the job's output printed once, under A
    (result,) = nb.of_type(second, "execute_result")
    assert result["content"]["data"]["text/plain"] == "7"


def html_of(nb: Kernel, code: str) -> str:
    """The ``text/html`` that ``display(...)`` of ``code`` shows in a cell."""
    msg_id = nb.run(f"from IPython.display import display\ndisplay({code})")
    (shown,) = nb.of_type(msg_id, "display_data")
    return str(shown["content"]["data"]["text/html"])


def test_a_client_shows_its_functions_with_signatures_in_html(nb: Kernel) -> None:
    shown = html_of(nb, "client")
    assert "hello(name: str, times: int = 1) -&gt; str" in shown
    assert "Greet someone, printing on the way." in shown
    assert "explode(value: int) -&gt; int" in shown
    assert "The greeting is printed" not in shown  # the first line of each docstring only


def test_a_pointer_shows_what_it_points_to_in_html_and_never_its_secret(nb: Kernel) -> None:
    nb.run("import numpy\nptr = undertow.put(numpy.arange(12).reshape(3, 4), to=client)")
    secret = nb.run("print(ptr.to_json()['secret_key'])")
    shown = html_of(nb, "ptr")
    for expected in ("numpy.ndarray", "(3, 4)", "int64", "96 bytes", "memory"):
        assert expected in shown
    assert nb.stream(secret).strip() not in shown


def test_a_job_and_the_cluster_show_in_html(cluster: Kernel) -> None:
    nb = cluster
    nb.run("shouted = cluster.submit(print, 'a line the job printed'); shouted.result(timeout=60)")
    job = html_of(nb, "shouted")
    assert "done" in job
    assert "attempt 1 of 1" in job
    assert "a line the job printed" in job
    shown = html_of(nb, "cluster")
    assert "1 x 2 slots" in shown
    assert "default: 0 waiting" in shown
    assert "dashboard" in shown


def test_help_and_completion_on_a_remote_function_come_from_the_server(nb: Kernel) -> None:
    code = "client.hello"
    asked = nb.client.inspect(code, cursor_pos=len(code), detail_level=0)
    reply = nb.shell_reply(asked)["content"]
    assert reply["found"]
    text = plain(reply["data"]["text/plain"])
    assert "hello(name: str, times: int = 1) -> str" in text
    assert "The greeting is printed on the server" in text
    asked = nb.client.complete("client.he", cursor_pos=len("client.he"))
    matches = nb.shell_reply(asked)["content"]["matches"]
    assert any(m.endswith("hello") for m in matches), matches
    asked = nb.client.complete("client.", cursor_pos=len("client."))
    matches = nb.shell_reply(asked)["content"]["matches"]
    assert {"hello", "explode", "late"} <= {m.rsplit(".", 1)[-1] for m in matches}, matches


def progress_values(nb: Kernel, msg_id: str) -> tuple[float, list[float]]:
    """The ``max`` of the progress bar widget a cell opened, and each value it was set to."""
    opened = [
        m
        for m in nb.of_type(msg_id, "comm_open")
        if m["content"]["data"]["state"].get("_model_name")
        in ("FloatProgressModel", "IntProgressModel")
    ]
    assert len(opened) == 1, [m["content"]["data"]["state"].get("_model_name") for m in opened]
    comm_id = opened[0]["content"]["comm_id"]
    state = opened[0]["content"]["data"]["state"]
    updates = [
        m["content"]["data"].get("state", {})
        for m in nb.all_of_type("comm_msg")
        if m["content"]["comm_id"] == comm_id
    ]
    values = [state.get("value", 0)] + [u["value"] for u in updates if "value" in u]
    return state["max"], values


def test_a_maps_progress_widget_reaches_the_total(cluster: Kernel) -> None:
    nb = cluster
    msg_id = nb.run(
        "jobs = cluster.map(abs, range(-5, 0), progress=True)\n[j.result() for j in jobs]"
    )
    total, values = progress_values(nb, msg_id)
    assert total == 5
    assert values[-1] == 5
    (result,) = nb.of_type(msg_id, "execute_result")
    assert result["content"]["data"]["text/plain"] == "[5, 4, 3, 2, 1]"
    by_name = """
        from undertow.queue import JobQueue
        with JobQueue(cluster.backend) as q:
            jobs = q.map("shout", ["a", "b"], progress=True)
    """
    queued = nb.run(cell(by_name))
    total, values = progress_values(nb, queued)
    assert (total, values[-1]) == (2, 2)


def test_a_remote_exception_shows_the_remote_frame_readably(nb: Kernel) -> None:
    msg_id = nb.run("client.explode(21)", fails=True)
    (error,) = nb.of_type(msg_id, "error")
    assert error["content"]["ename"] == "ValueError"
    assert error["content"]["evalue"] == "value 42 is out of range"
    text = plain("\n".join(error["content"]["traceback"]))
    assert re.search(r'File "[^"]*server_\d+_\d+\.py", line \d+, in explode', text), text
    assert 'raise ValueError(f"value {checked} is out of range")' in text
    assert "ValueError: value 42 is out of range" in text
    assert "_calls.py" not in text  # the frames that carried the error back are left out
    assert "\\x" not in text, text  # no raw bytes
    assert "b'" not in text, text


TOUR = ROOT / "examples" / "notebook" / "tour.py"


def tour_cells() -> list[str]:
    """The code cells of examples/notebook/tour.py (``# %%`` starts a cell)."""
    cells = re.split(r"^# %%.*$", TOUR.read_text(), flags=re.MULTILINE)[1:]
    return [c.strip() for c in cells if c.strip() and not c.lstrip().startswith("# #")]


def test_the_notebook_tour_runs_cell_by_cell(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path, TOUR.parent)
    ran: list[tuple[str, str]] = []

    def cell_with(text: str) -> str:
        return next(msg_id for code, msg_id in ran if text in code)

    try:
        ran += [(code, kernel.run(code, timeout=180)) for code in tour_cells()]
        future = cell_with("future = client.train.submit")
        kernel.pump_until(lambda: "epoch 4" in kernel.stream(future), 30, "the late lines")
        squared = cell_with("cluster.submit(square")
        kernel.pump_until(lambda: "squaring 7" in kernel.stream(squared), 30, "the job's line")
    finally:
        kernel.shutdown()
    assert kernel.stream(future) == "".join(f"epoch {i}: loss {0.5**i:.3f}\n" for i in range(1, 5))
    helped = kernel.stream(cell_with("help(client.train)"))
    assert not re.search(r"epoch \d: loss", helped)  # the future's lines, all under its cell
    assert "train(epochs: int = 3, pause: float = 0.3) -> float" in helped
    assert kernel.stream(squared) == "squaring 7\n"
    (shown,) = kernel.of_type(cell_with("ptr = undertow.put"), "execute_result")
    assert "(1000, 1000)" in shown["content"]["data"]["text/html"]
    total, values = progress_values(kernel, cell_with("progress=True"))
    assert (total, values[-1]) == (20, 20)
    assert "raised here: ValueError" in kernel.stream(cell_with("client.explode(21)"))
