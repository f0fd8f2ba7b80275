"""A real Jupyter kernel for the notebook tests: ipykernel in a child process, driven by
jupyter_client, with every iopub message filed under the request it answers.

A frontend files outputs by their ``parent_header.msg_id``; so do these tests. Every wait
reads messages until what it waits for came or its deadline passed: no sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

#: seconds a kernel may take to start and answer its first request (a loaded 2-core machine)
START_TIMEOUT = 120.0
#: seconds one cell may take by default
CELL_TIMEOUT = 90.0

Message = dict[str, Any]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    """``text`` without its ANSI colours (IPython colours tracebacks and help)."""
    return _ANSI.sub("", text)


class Kernel:
    """One running kernel and the iopub messages it sent, by parent request id."""

    def __init__(self, directory: Path, cwd: Path) -> None:
        spec = directory / "kernels" / "undertow-test"
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        spec.joinpath("kernel.json").write_text(
            json.dumps({"argv": argv, "display_name": "undertow tests", "language": "python"})
        )
        specs = KernelSpecManager(kernel_dirs=[str(directory / "kernels")])
        self.manager = KernelManager(
            kernel_name="undertow-test",
            kernel_spec_manager=specs,
            connection_file=str(directory / "kernel.json"),
        )
        env = {"IPYTHONDIR": str(directory / "ipython"), "PYTHONUNBUFFERED": "1"}
        self.manager.start_kernel(cwd=str(cwd), env={**os.environ, **env})
        self.client: BlockingKernelClient = self.manager.client()
        self.client.start_channels()
        try:
            self.client.wait_for_ready(timeout=START_TIMEOUT)
        except BaseException:
            self.shutdown()  # never leave a kernel behind
            raise
        #: iopub messages by the msg_id of the request they answer
        self.by_parent: dict[str, list[Message]] = defaultdict(list)

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)

    # -- reading ---------------------------------------------------------------------------

    def pump_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """File iopub messages until ``done()`` holds; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout:g} s; got {self.summary()}")
            try:
                msg = self.client.get_iopub_msg(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            self.by_parent[msg["parent_header"].get("msg_id", "")].append(msg)

    def idle(self, msg_id: str) -> bool:
        """Whether the kernel said it is idle after the request ``msg_id``."""
        return any(
            m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
            for m in self.by_parent[msg_id]
        )

    def summary(self) -> str:
        return "; ".join(
            f"{parent[:8]}: {[m['msg_type'] for m in msgs]}"
            for parent, msgs in self.by_parent.items()
        )

    def stream(self, msg_id: str, name: str = "stdout") -> str:
        """What the kernel printed on ``name`` under the request ``msg_id``."""
        return "".join(
            m["content"]["text"]
            for m in self.by_parent[msg_id]
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )

    def of_type(self, msg_id: str, *types: str) -> list[Message]:
        return [m for m in self.by_parent[msg_id] if m["msg_type"] in types]

    def all_of_type(self, *types: str) -> list[Message]:
        return [m for msgs in self.by_parent.values() for m in msgs if m["msg_type"] in types]

    # -- requests --------------------------------------------------------------------------

    def start(self, code: str) -> str:
        """Send a cell; its request's msg_id (the cell's outputs carry it as parent)."""
        return str(self.client.execute(code, store_history=False))

    def run(self, code: str, timeout: float = CELL_TIMEOUT, *, fails: bool = False) -> str:
        """Run a cell to its end; its msg_id. A cell that raised fails the test (unless
        ``fails``), with the kernel's traceback."""
        msg_id = self.start(code)
        self.wait(msg_id, timeout)
        errors = self.of_type(msg_id, "error")
        if errors and not fails:
            raise AssertionError(plain("\n".join(errors[0]["content"]["traceback"])))
        return msg_id

    def wait(self, msg_id: str, timeout: float = CELL_TIMEOUT) -> None:
        self.pump_until(lambda: self.idle(msg_id), timeout, f"end of cell {msg_id[:8]}")

    def shell_reply(self, msg_id: str, timeout: float = CELL_TIMEOUT) -> Message:
        """The shell channel's reply to the request ``msg_id`` (replies to earlier cells
        are passed over)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no reply to {msg_id[:8]} within {timeout:g} s")
            try:
                reply = self.client.get_shell_msg(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply
