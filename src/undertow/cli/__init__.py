"""The ``undertow`` command line. The only place that configures logging."""

from __future__ import annotations

import logging

import click

__all__ = ["main"]


@click.group()
@click.version_option(package_name="undertow")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """undertow: call Python on other machines as if it were local."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


@main.command()
@click.option("--timeout", default=60.0, show_default=True, help="Give up after this many seconds.")
def demo(timeout: float) -> None:
    """Start a server in a child process and show what a client sees."""
    from undertow.cli._demo import run_demo

    raise SystemExit(run_demo(timeout=timeout))
