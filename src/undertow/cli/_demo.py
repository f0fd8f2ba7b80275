"""``undertow demo``: a server in a child process, and what a client sees of it."""

from __future__ import annotations

import inspect
import os
import selectors
import subprocess
import sys
import time

import click

from undertow.rpc import Client, connect, functions
from undertow.security import new_token

__all__ = ["run_demo"]


def _title(text: str) -> None:
    click.secho(f"\n== {text}", fg="cyan", bold=True)


def _start_server(token: str, timeout: float) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "UNDERTOW_DEMO_TOKEN": token}
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "undertow.cli._demo_server"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        proc.kill()
        raise click.ClickException(f"the demo server did not start within {timeout:g} s")
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise click.ClickException(f"the demo server failed to start: {line.strip()!r}")
    return proc, line.rsplit(" ", 1)[-1].strip()


def _show(client: Client) -> None:
    _title(f"Discovery: {client!r}")
    for name, fn in functions(client).items():
        summary = (fn.__doc__ or "").strip().splitlines()[:1]
        click.echo(f"  {name}{inspect.signature(fn)}  -- {' '.join(summary)}")

    _title("A call whose prints stream back while it runs")
    started = time.perf_counter()
    result = client.train(epochs=3)
    click.echo(f"  result: {result}  ({time.perf_counter() - started:.2f} s)")

    _title("A remote exception, raised here as the same type")
    try:
        client.divide(1, 0)
    except ZeroDivisionError as exc:
        click.echo(f"  caught ZeroDivisionError: {exc}")
        click.echo("  remote traceback, chained beneath it:")
        for line in str(exc.__cause__).strip().splitlines():
            click.echo(f"    {line}")

    _title("A generator streaming its items")
    for i in client.countdown(3):
        click.echo(f"  got {i}")

    _title("A numpy array there and back (pickle, out-of-band buffers)")
    try:
        import numpy as np
    except ImportError:
        click.echo("  numpy is not installed; pip install 'undertow[numpy]' to see this part")
        return
    array = np.arange(1_000_000, dtype=np.float64)
    click.echo(f"  stats_np: {client.stats_np(array)}")
    doubled = client.scale_np(array, 2.0)
    same = bool((doubled == array * 2).all())
    click.echo(f"  scale_np: {type(doubled).__name__} {doubled.shape}, equal={same}")


def run_demo(timeout: float = 60.0) -> int:
    """Run the demo; returns the exit code."""
    token = new_token("demo")
    proc, address = _start_server(token, timeout=min(timeout, 30.0))
    try:
        click.echo(f"undertow demo: server started in child process {proc.pid} at {address}")
        with connect(address, token=token, timeout=timeout) as client:
            _show(client)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    click.secho("\nundertow demo: done", fg="green")
    return 0
