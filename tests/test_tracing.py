"""OpenTelemetry spans of calls: with a tracer provider set, a server makes one span a call
it answered and a client one a call it made, with the call's number, the server, the log
records' call id and its function's start and return; without one, nothing is made.

Each case runs in a process of its own: a tracer provider can be set once a process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from undertow.rpc._tracing import configured_tracer

pytest.importorskip("opentelemetry.sdk", reason="needs the dev extra (opentelemetry-sdk)")

pytestmark = [pytest.mark.usefixtures("undertow_home"), pytest.mark.timeout(90)]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    if sys.argv[1] == "on":
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

    import undertow

    server = undertow.Server(name="traced")

    @server.register
    def double(x):
        return 2 * x

    @server.register
    def fails():
        raise ValueError("no")

    address = server.start("tcp://127.0.0.1:0")
    with undertow.connect(address) as client:
        assert client.double(21) == 42
        try:
            client.fails()
        except ValueError:
            pass
    server.stop()
    spans = [
        {
            "name": s.name,
            "kind": s.kind.name,
            "status": s.status.status_code.name,
            "attributes": dict(s.attributes),
            "events": [e.name for e in s.events],
            "start": s.start_time,
            "end": s.end_time,
        }
        for s in exporter.get_finished_spans()
    ]
    print(json.dumps(spans))
    """
)


def _spans(tmp_path: Path, mode: str) -> list[dict[str, object]]:
    script = tmp_path / "traced.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), mode], capture_output=True, text=True, timeout=60, check=True
    )
    spans: list[dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return spans


def test_calls_make_server_and_client_spans_with_the_call_id(tmp_path: Path) -> None:
    spans = _spans(tmp_path, "on")
    mine = [s for s in spans if s["name"] in ("undertow.call double", "undertow.call fails")]
    by = {(s["name"], s["kind"]): s for s in mine}
    assert sorted(by) == [
        ("undertow.call double", "CLIENT"),
        ("undertow.call double", "SERVER"),
        ("undertow.call fails", "CLIENT"),
        ("undertow.call fails", "SERVER"),
    ]
    server, client = by["undertow.call double", "SERVER"], by["undertow.call double", "CLIENT"]
    s_attrs, c_attrs = server["attributes"], client["attributes"]
    assert isinstance(s_attrs, dict)
    assert isinstance(c_attrs, dict)
    assert s_attrs["undertow.server"] == "traced"
    assert s_attrs["rpc.method"] == c_attrs["rpc.method"] == "double"
    assert s_attrs["undertow.call_id"] == c_attrs["undertow.call_id"]
    assert str(s_attrs["undertow.log_id"]).startswith("traced/")
    assert str(s_attrs["undertow.log_id"]).endswith(f"/{s_attrs['undertow.call_id']}")
    assert server["events"] == ["function started", "function returned"]
    assert c_attrs["undertow.ran_ns"] >= 0
    # the server's span lies within the client's (both from the same clock here)
    assert isinstance(server["start"], int)
    assert isinstance(client["start"], int)
    assert client["start"] <= server["start"] <= server["end"] <= client["end"]  # type: ignore[operator]
    assert by["undertow.call fails", "SERVER"]["status"] == "ERROR"
    assert by["undertow.call fails", "CLIENT"]["status"] == "ERROR"
    assert server["status"] == "UNSET"


def test_without_a_tracer_provider_nothing_is_traced(tmp_path: Path) -> None:
    # the API alone (its default provider records nothing) is not a reason to make spans
    assert configured_tracer() is None
    assert _spans(tmp_path, "off") == []  # and calls run as ever
