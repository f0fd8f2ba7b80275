"""Logs: one JSON object a line with ``--log-format json``, the id of the call on every
record made while it runs (the function's own records included), and no secret in any
record of a signed session, a refused one or a pointer's use, at debug level."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import undertow
from undertow._util import CallIdFilter, JsonFormatter
from undertow.security import new_token, parse_token

pytestmark = [pytest.mark.usefixtures("undertow_home"), pytest.mark.timeout(60)]

WAIT = 20.0
user_log = logging.getLogger("tests.user_function")


@pytest.fixture
def json_records() -> Iterator[io.StringIO]:
    """Every record from debug up, as the JSON formatter writes them, into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(CallIdFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    before = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(before)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_records_made_during_a_call_carry_its_id(json_records, tmp_path):
    server = undertow.Server(name="logged")

    @server.register
    def work(n: int) -> int:
        user_log.warning("working on %d", n, extra={"step": "start"})
        return n

    @server.register
    async def work_async(n: int) -> int:
        user_log.warning("async %d", n)
        return n

    server.config({"*": {"output": False}})  # the records stay here, not with the caller
    address = server.start("tcp://127.0.0.1:0")
    try:
        with undertow.connect(address, timeout=WAIT) as client:
            assert [client.work(1), client.work(2), client.work_async(3)] == [1, 2, 3]
        user_log.warning("outside any call")
    finally:
        server.stop()
    records = [r for r in parsed(json_records) if r["logger"] == "tests.user_function"]
    by_message = {r["message"]: r for r in records}
    ids = [by_message[m]["call_id"] for m in ("working on 1", "working on 2", "async 3")]
    assert all(i and i.startswith("logged/") for i in ids), ids
    assert len(set(ids)) == 3  # each call its own
    assert by_message["outside any call"]["call_id"] is None
    first = by_message["working on 1"]
    assert first["step"] == "start"  # extra= fields kept
    assert first["level"] == "WARNING"
    assert first["time"].endswith("Z")


def test_setup_logging_writes_json_lines_and_refuses_unknown_formats():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        undertow.setup_logging(logging.INFO, "json", stream)
        logging.getLogger("tests.setup").info("hello %s", "there")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("tests.setup").exception("failed")
    finally:
        root.handlers[:], root.level = saved
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["message"], first["level"], first["call_id"]) == ("hello there", "INFO", None)
    assert "ValueError: boom" in second["exception"]
    with pytest.raises(ValueError, match="log format 'xml'"):
        undertow.setup_logging(logging.INFO, "xml")


def test_no_secret_in_any_record(json_records, tmp_path):
    token = new_token("ada")
    secret = parse_token(token)[1]
    wrong = new_token("ada")  # the same key id, another secret
    server = undertow.Server(name="secretive", token=token)

    @server.register
    def make(n: int) -> Any:
        return np.ones(n)

    server.config({"make": {"return_pointer": True}})
    address = server.start("tcp://127.0.0.1:0")
    try:
        with undertow.connect(address, token=token, timeout=WAIT) as client:
            ptr = client.make(10)
            pointer_secret = ptr.to_json()["secret_key"]
            assert float(ptr.fetch().sum()) == 10.0
            assert ptr.delete() is True
        with pytest.raises(undertow.UndertowError):
            with undertow.connect(address, token=wrong, timeout=2) as refused:
                refused.make(1)
    finally:
        server.stop()
    text = json_records.getvalue()
    assert text  # debug records were made
    for hidden in (token, wrong, parse_token(wrong)[1], secret, pointer_secret):
        assert hidden not in text


SERVICE = """
import logging
from undertow.service import Expose

log = logging.getLogger("service.user")

@Expose()
class Logged:
    @Expose()
    def hello(self, name):
        log.warning("hello %s", name)
        return name
"""


def test_undertow_serve_log_format_json(tmp_path: Path):
    (tmp_path / "logged.py").write_text(SERVICE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "undertow.cli", "--log-format", "json", "serve", "logged.py"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
        with undertow.connect(address, timeout=WAIT) as client:
            # without its output sent to the caller, the record stays in the server's log
            assert client.hello.options(output=False)("ada") == "ada"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=WAIT)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (said,) = [r for r in lines if r["logger"] == "service.user"]
    assert said["message"] == "hello ada"
    assert said["call_id"].startswith("Logged/")
    assert all(line.startswith("{") for line in err.splitlines() if line.strip()), err
