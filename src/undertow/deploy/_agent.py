"""The remote half of ``undertow up``/``down``: ``python -m undertow.deploy._agent`` on each
host, run over ssh with one JSON request on its standard input and one JSON answer as the
last line of its standard output. Standard library only, and it imports nothing else of
undertow: it runs before anything else of the cluster exists.

Its state is the host's run directory (``RUN``, e.g. ``~/.undertow/clusters/lab/node1``)::

    RUN/procs.json      the processes started: name, role, pid, start time, log, command
    RUN/logs/NAME.log   each process's output (stdout and stderr)
    RUN/config.toml     the settings file of its processes (RUN is their UNDERTOW_HOME)
    RUN/tokens ...      secrets, written from the request (never a command line), mode 0600

Actions: ``start`` writes the files, makes the CURVE key pair (``undertow keygen``, so the
secret key never leaves the host), starts each process detached (a session of its own, output
to its log) and waits for its readiness line; ``stop`` sends SIGTERM to each process group,
then SIGKILL after the deadline; ``exec`` runs one command to its end (``undertow group add``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["alive", "main", "running"]

#: how often a log or a process is looked at while waiting (the waits have deadlines)
_POLL = 0.05
_TAIL = 3000


def _private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (its directories made 0700), readable by this user only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


def _start_ticks(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: /proc), so a reused pid is not taken for it;
    None where there is no /proc or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] == "Z" else fields[19]


def alive(entry: dict[str, Any]) -> bool:
    """Whether the process recorded in ``entry`` still runs (not a zombie, not another
    process that got its pid)."""
    pid = int(entry["pid"])
    if Path("/proc").is_dir():
        ticks = _start_ticks(pid)
        return ticks is not None and ticks == entry.get("start")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _state(run: Path) -> list[dict[str, Any]]:
    try:
        entries: list[dict[str, Any]] = json.loads((run / "procs.json").read_text())
    except FileNotFoundError:
        return []
    return entries


def _save(run: Path, entries: list[dict[str, Any]]) -> None:
    temporary = run / "procs.json.new"
    _private(temporary, json.dumps(entries, indent=1))
    temporary.replace(run / "procs.json")


def running(run: str) -> list[str]:
    """The names of the processes recorded in ``run`` that still run."""
    return [e["name"] for e in _state(Path(run).expanduser()) if alive(e)]


def _tail(log: Path) -> str:
    try:
        return log.read_bytes()[-_TAIL:].decode(errors="replace")
    except OSError as exc:
        return f"(no log: {exc.strerror})"


def _launch(run: Path, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    logs = run / "logs"
    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = logs / f"{spec['name']}.log"
    args = [arg.replace("{run}", str(run)) for arg in spec["args"]]
    with open(log, "wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - the commands `undertow up` planned
            args,
            cwd=Path(spec.get("cwd") or "~").expanduser(),
            env={**env, **spec.get("env", {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # detached: its own session and process group
        )
    return {
        "name": spec["name"],
        "role": spec["role"],
        "pid": proc.pid,
        "start": _start_ticks(proc.pid),
        "log": str(log),
        "args": args,
        "ready": spec["ready"],
        "proc": proc,
    }


def _wait_ready(started: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """Wait for each process's readiness line in its log, its exit, or the deadline."""
    deadline = time.monotonic() + timeout
    results: dict[str, dict[str, Any]] = {}
    while len(results) < len(started):
        for entry in started:
            if entry["name"] in results:
                continue
            log = Path(entry["log"])
            found = re.search(entry["ready"] + ".*", log.read_text(errors="replace"))
            code = entry["proc"].poll()
            if found:
                results[entry["name"]] = {"ready": found.group(0).strip()}
            elif code is not None:
                results[entry["name"]] = {"error": f"exited ({code})", "tail": _tail(log)}
            elif time.monotonic() > deadline:
                results[entry["name"]] = {
                    "error": f"no readiness line within {timeout:g} s",
                    "tail": _tail(log),
                }
        time.sleep(_POLL)
    return [{"name": e["name"], "pid": e["pid"], **results[e["name"]]} for e in started]


def _keygen(run: Path, name: str, env: dict[str, str]) -> str:
    """The CURVE key pair ``RUN/curve/NAME.key[_secret]`` (made once); the public file's
    text."""
    public = run / "curve" / f"{name}.key"
    if not public.exists():
        (run / "curve").mkdir(mode=0o700, parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "undertow.cli",
            "keygen",
            name,
            "--dir",
            str(public.parent),
        ]
        done = subprocess.run(  # noqa: S603 - undertow keygen, by this Python
            command, env=env, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"undertow keygen failed: {done.stderr.strip()}")
    return public.read_text()


def _start(request: dict[str, Any]) -> dict[str, Any]:
    run = Path(request["run"]).expanduser()
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    run.chmod(0o700)
    wanted = {spec["name"] for spec in request["procs"]}
    live = [e["name"] for e in _state(run) if alive(e) and e["name"] in wanted]
    if live:
        return {"ok": False, "error": f"already running here: {', '.join(live)}"}
    for relative, text in request.get("files", {}).items():
        _private(run / relative, text)
    env = {**os.environ, **request.get("env", {}), "UNDERTOW_HOME": str(run)}
    env["PYTHONUNBUFFERED"] = "1"
    answer: dict[str, Any] = {"ok": True}
    if request.get("keygen"):
        answer["public_key"] = _keygen(run, request["keygen"], env)
    started: list[dict[str, Any]] = []
    try:
        for spec in request["procs"]:  # each recorded even if a later one cannot start
            started.append(_launch(run, spec, env))  # noqa: PERF401
    finally:
        kept = [e for e in _state(run) if alive(e)]
        _save(run, kept + [{k: v for k, v in e.items() if k != "proc"} for e in started])
    answer["procs"] = _wait_ready(started, float(request["timeout"]))
    answer["ok"] = all("ready" in p for p in answer["procs"])
    return answer


def _signal(entry: dict[str, Any], sig: signal.Signals) -> None:
    pid = int(entry["pid"])
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, sig)  # the process group: a worker's job processes too
        except ProcessLookupError:
            os.kill(pid, sig)


def _wait_gone(entries: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    left = [e for e in entries if alive(e)]
    while left and time.monotonic() < deadline:
        time.sleep(_POLL)
        left = [e for e in left if alive(e)]
    return left


def _stop(request: dict[str, Any]) -> dict[str, Any]:
    run = Path(request["run"]).expanduser()
    roles = request.get("roles")
    entries = _state(run)
    chosen = [e for e in entries if roles is None or e["role"] in roles]
    live = [e for e in chosen if alive(e)]
    for entry in live:
        _signal(entry, signal.SIGTERM)
    stubborn = _wait_gone(live, float(request["timeout"]))
    for entry in stubborn:
        _signal(entry, signal.SIGKILL)
    still = _wait_gone(stubborn, 10.0)
    how = {e["name"]: "SIGTERM" for e in live}
    how.update({e["name"]: "SIGKILL" for e in stubborn})
    how.update({e["name"]: "still running" for e in still})
    stopped = [{"name": e["name"], "pid": e["pid"], "how": how.get(e["name"], "not running")}
               for e in chosen]  # fmt: skip
    if run.is_dir():
        _save(run, [e for e in entries if e not in chosen or e in still])
    if roles is None and not still:
        for secret in request.get("secrets", []):
            with contextlib.suppress(FileNotFoundError):
                (run / secret).unlink()
    return {"ok": not still, "stopped": stopped}


def _exec(request: dict[str, Any]) -> dict[str, Any]:
    run = Path(request["run"]).expanduser()
    env = {**os.environ, **request.get("env", {}), "UNDERTOW_HOME": str(run)}
    done = subprocess.run(  # noqa: S603 - undertow group add, planned by `undertow up`
        request["args"], env=env, capture_output=True, text=True, timeout=request["timeout"]
    )
    output = (done.stdout + done.stderr)[-_TAIL:]
    return {"ok": done.returncode == 0, "code": done.returncode, "output": output}


_ACTIONS = {"start": _start, "stop": _stop, "exec": _exec}


def main() -> int:
    """Answer the request on standard input; 0 if it went well."""
    request = json.loads(sys.stdin.read())
    try:
        answer = _ACTIONS[request["action"]](request)
    except Exception as exc:  # reported to `undertow up`, which names the host
        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
