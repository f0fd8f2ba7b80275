"""The ``undertow`` command line. The only place that configures logging."""

from __future__ import annotations

import logging
from typing import Any

import click

from undertow._util import LOG_FORMATS, setup_logging
from undertow.cli import _dashboard
from undertow.cli._groups import host_groups
from undertow.cli._jobs import jobs, queues
from undertow.cli._serving import serving
from undertow.cli._up import cluster_down, cluster_up

__all__ = ["main"]

#: what the help of a serving command says of the options it does not get
_NOT_GIVEN = (
    "An option not given comes from $UNDERTOW_<OPTION> (UNDERTOW_PORT, UNDERTOW_TOKEN...), "
    "else from [host] in the settings file (`undertow config path`), else its default; "
    "`undertow config show` lists them all with their sources."
)


@click.group()
@click.version_option(package_name="undertow")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    envvar="UNDERTOW_LOG_FORMAT",
    help="Log records as text lines or one JSON object a line, each with the id of the call "
    "it was made in ($UNDERTOW_LOG_FORMAT).",
)
def main(verbose: int, log_format: str) -> None:
    """undertow: call Python on other machines as if it were local."""
    setup_logging(logging.WARNING - 10 * min(verbose, 2), log_format)


#: the functions a worker (of the job queue, or of a master) serves
_module_option = click.option(
    "--module",
    "modules",
    multiple=True,
    metavar="MODULE",
    help="Every public function defined in MODULE, by its name (repeatable).",
)
_function_option = click.option(
    "--function",
    "functions",
    multiple=True,
    metavar="NAME=module:attr",
    help="A function it serves under NAME (repeatable).",
)
#: a worker's own figures for Prometheus
_metrics_option = click.option(
    "--metrics",
    "metrics_port",
    type=int,
    default=None,
    metavar="PORT",
    help="Serve its figures for Prometheus at /metrics on this port of 127.0.0.1 (0: a free one).",
)


@main.command()
@click.option("--timeout", default=60.0, show_default=True, help="Give up after this many seconds.")
def demo(timeout: float) -> None:
    """Start a server in a child process and show what a client sees."""
    from undertow.cli._demo import run_demo

    raise SystemExit(run_demo(timeout=timeout))


@main.command(epilog=_NOT_GIVEN)
@click.argument("targets", nargs=-1, required=True, metavar="FILE_OR_MODULE...")
@serving
def serve(targets: tuple[str, ...], **options: object) -> None:
    """Serve every class marked with @Expose() in the given files or modules.

    Each service gets a port of its own and a record in the cluster registry, removed when
    the command stops (Ctrl-C or SIGTERM). The same as `python -m undertow.service`.
    """
    from undertow.service import launch

    raise SystemExit(launch(list(targets), **options))


@main.group()
def data() -> None:
    """Remote data: a data server of its own, and the catalog of what the cluster keeps."""


@data.command("serve", epilog=_NOT_GIVEN)
@serving
def data_serve(**options: Any) -> None:
    """Serve a data server on its own, registered as the service "data" (where
    undertow.put() sends values by default), until Ctrl-C or SIGTERM."""
    from undertow.service import launch

    raise SystemExit(launch(["undertow.service._datanode"], **options))


@data.command("ls")
@click.option("--tag", "tags", multiple=True, help="Only values with this tag (repeatable).")
@click.option("--owner", default=None, help="Only values of this owner.")
@click.option("--type", "type_name", default=None, help="Only values of this type name.")
@click.option(
    "--backend",
    default=None,
    help="Registry URL (default: $UNDERTOW_BACKEND, else ~/.undertow/cluster.db).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def data_ls(
    tags: tuple[str, ...],
    owner: str | None,
    type_name: str | None,
    backend: str | None,
    as_json: bool,
) -> None:
    """List the values the cluster's data servers keep (never their secrets)."""
    from undertow.cli._data import list_data

    list_data(list(tags), owner, type_name, backend, as_json)


@main.group()
def config() -> None:
    """Settings: what each one is here and where it comes from, and the settings file."""


@config.command("show")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON array of {section, name, value, source, env, doc} objects.",
)
def config_show(as_json: bool) -> None:
    """Print each setting's effective value and its source, by section: an argument wins,
    then $UNDERTOW_<NAME>, then the section's table in the settings file, then the default.
    Secrets are shown as ***."""
    from undertow.cli._config import show_settings

    show_settings(as_json)


@config.command("path")
def config_path() -> None:
    """Print the path of the settings file (config.toml in the undertow home, $UNDERTOW_HOME
    or ~/.undertow)."""
    from undertow.cli._config import show_path

    show_path()


@main.group()
def token() -> None:
    """Make tokens: the shared secrets that authenticate callers."""


@token.command("new")
@click.argument("name")
@click.option(
    "--append",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also add it to this tokens file (made readable by its owner only).",
)
def token_new(name: str, append: str | None) -> None:
    """Print a new token for user NAME (256 random bits).

    Give it to the user (UNDERTOW_TOKEN, or token = "..." in ~/.undertow/config.toml) and to
    the server (a line of its --tokens file).
    """
    from undertow.cli._security import new_token_command

    new_token_command(name, append)


@main.command()
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to write the key files.",
)
def keygen(name: str, directory: str) -> None:
    """Make a CURVE key pair: NAME.key (public, for clients) and NAME.key_secret (the
    server's, readable by its owner only)."""
    from undertow.cli._security import keygen_command

    keygen_command(name, directory)


@main.command()
@click.option(
    "--backend",
    default=None,
    help="Registry URL (default: $UNDERTOW_BACKEND, else ~/.undertow/cluster.db).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(backend: str | None, as_json: bool) -> None:
    """Show the live services of the registry: addresses, instances and health; then the
    job queue's live workers (`undertow worker`).

    Only services (`undertow serve`, `python -m undertow.service`) register. A plain
    undertow.Server does not: list its functions with `undertow call ADDRESS --list`.
    """
    from undertow.cli._cluster import show_status
    from undertow.errors import UndertowError

    try:
        show_status(backend, as_json)
    except UndertowError as exc:
        raise click.ClickException(str(exc)) from None


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("target", metavar="ADDRESS|SERVICE.METHOD")
@click.argument(
    "arguments", nargs=-1, type=click.UNPROCESSED, metavar="[FUNCTION] [ARG|KEY=VALUE]..."
)
@click.option(
    "--list",
    "listing",
    is_flag=True,
    help="List the functions of the server at ADDRESS (or of the service SERVICE) instead.",
)
@click.option(
    "--backend",
    default=None,
    help="Registry URL (default: $UNDERTOW_BACKEND, else ~/.undertow/cluster.db).",
)
@click.option(
    "--timeout", default=60.0, show_default=True, help="Deadline of the call, in seconds."
)
@click.option(
    "--wait",
    default=5.0,
    show_default=True,
    help="Seconds to wait for the service to register, or the server at ADDRESS to answer.",
)
def call(
    target: str,
    arguments: tuple[str, ...],
    listing: bool,
    backend: str | None,
    timeout: float,
    wait: float,
) -> None:
    """Call a function and print its result (JSON when it has a JSON form; a generator's
    items one a line). The target is a server's address (tcp://, ipc://, http://) followed
    by the function's name, or a registered service's SERVICE.METHOD.

    Arguments are JSON where they parse (3, "text", [1,2], null) and text otherwise;
    KEY=VALUE passes a keyword argument. Remote output appears as the function runs:

    \b
        undertow call tcp://127.0.0.1:5555 train epochs=2
        undertow call http://127.0.0.1:8080 divide 1 3
        undertow call MemKeyValue.put key=a value=3
        undertow call MemKeyValue.get a
        undertow call tcp://127.0.0.1:5555 --list

    A plain undertow.Server is reached by its address only: it is not in the registry, so
    `undertow status` does not list it.
    """
    from undertow.cli._call import call_target, list_target, report_error

    try:
        if listing:
            list_target(target, backend=backend, timeout=timeout, wait=wait)
        else:
            call_target(target, arguments, backend=backend, timeout=timeout, wait=wait)
    except Exception as exc:  # undertow's errors and the remote function's own
        raise SystemExit(report_error(exc)) from None


@main.command()
@click.option(
    "--queue",
    "queues",
    multiple=True,
    help="A queue to take jobs from (repeatable; first ones first; default: default).",
)
@click.option(
    "--concurrency", default=1, show_default=True, type=click.IntRange(min=1), help="Jobs at once."
)
@click.option("--burst", is_flag=True, help="Exit (0) once the queues are empty.")
@click.option(
    "--backend",
    default=None,
    help="Backend URL (default: $UNDERTOW_BACKEND, else ~/.undertow/cluster.db).",
)
@click.option(
    "--lease",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a job stays claimed without a heartbeat (if the worker dies, others "
    "take its jobs after this long).",
)
@click.option(
    "--tokens",
    default=None,
    type=click.Path(dir_okay=False),
    help="A file of tokens whose users' pickled callables run, one a line ($UNDERTOW_TOKENS).",
)
@click.option(
    "--token", default=None, help="One such token (better: set UNDERTOW_TOKEN, unseen by others)."
)
@_function_option
@_module_option
@click.option(
    "--mode",
    default="thread",
    show_default=True,
    type=click.Choice(["thread", "process", "fork"]),
    help="Where jobs run: threads of the worker (fastest); a process per slot (CPU-bound "
    "jobs in parallel; a crash fails only its job); a process forked for each job (nothing "
    "a job does to its process reaches the next).",
)
@click.option(
    "--data",
    default=None,
    metavar="ADDRESS",
    help="Where the results of jobs submitted with return_pointer stay: a data server's "
    'address or service name (default: the service "data" of the registry, this host\'s '
    "first).",
)
@_metrics_option
def worker(**options: Any) -> None:
    """Run the jobs of the durable job queue (undertow.queue.JobQueue) until Ctrl-C or
    SIGTERM, which drain: the jobs held finish, nothing more is claimed; a second signal
    stops at once (the jobs held run again elsewhere after their leases).

    Modules are imported from the current directory or PYTHONPATH. Jobs by name run the
    functions given; pickled callables run only for users whose tokens the worker has.

    \b
        undertow worker --module imaging
        undertow worker --function resize=imaging:resize --concurrency 4
        undertow worker --queue gpu --queue default --module training --tokens ~/tokens
        undertow worker --burst --module imaging --backend redis://queue-host:6379/0
        undertow worker --module training --concurrency 8 --mode process
    """
    from undertow.cli._worker import run_worker

    raise SystemExit(run_worker(**options))


main.add_command(jobs)  # undertow jobs ls/show/cancel/retry (cli/_jobs.py)


@main.command()
@click.argument("name")
@click.argument("stages", nargs=-1, required=True, metavar="SERVICE.FUNCTION...")
@click.option("--http", default=8080, show_default=True, help="HTTP port (0: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--backend", default=None, help="Registry URL the stages are found in.")
def gateway(name: str, stages: tuple[str, ...], **options: Any) -> None:
    """An HTTP gateway NAME in front of a master or a pipeline (stages in order): POST NDJSON
    to /call/run, answers as NDJSON as they finish. `undertow gateway front step1.foo last.baz`"""
    from undertow.cli._patterns import run_gateway

    raise SystemExit(run_gateway(name, stages, **options))


@main.command("master-worker")
@click.argument("master")
@_module_option
@_function_option
@click.option("--slots", default=1, show_default=True, help="Messages run at once (threads).")
@click.option("--backend", default=None, help="Registry URL the master is found in.")
@click.option("--token", default=None, help="Token to sign with (better: UNDERTOW_TOKEN).")
@_metrics_option
def master_worker(master: str, **options: Any) -> None:  # fmt: skip
    """Serve the messages of the master MASTER (undertow.Master) with the functions given,
    until Ctrl-C or SIGTERM: `undertow master-worker squares --module tasks --slots 4`."""
    from undertow.cli._patterns import run_master_worker

    raise SystemExit(run_master_worker(master, **options))


main.add_command(queues)
main.add_command(host_groups)  # undertow group add/rm/ls/show (cli/_groups.py)
main.add_command(_dashboard.dashboard)  # undertow dashboard (cli/_dashboard.py)
main.add_command(cluster_up)  # undertow up/down cluster.toml (cli/_up.py, undertow.deploy)
main.add_command(cluster_down)


@main.command()
@click.option("--bind", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=6379, show_default=True, help="Port to listen on.")
@click.option(
    "--dir",
    "directory",
    default=None,
    help="Where its files go (default: the undertow home's broker/ directory).",
)
@click.option(
    "--fsync",
    default="always",
    show_default=True,
    type=click.Choice(["always", "everysec"]),
    help="always: each acknowledged job is on disk; everysec: up to a second may be lost.",
)
def broker(bind: str, port: int, directory: str | None, fsync: str) -> None:
    """Run a Redis server for the job queue, durable by default (append-only file synced
    before each answer); beyond loopback it requires a password, made on first use.

    \b
        undertow broker                                  # 127.0.0.1:6379, ~/.undertow/broker
        undertow broker --bind 0.0.0.0 --dir /srv/undertow-broker
    """
    from undertow.cli._broker import run_broker

    run_broker(bind=bind, port=port, directory=directory, fsync=fsync)
