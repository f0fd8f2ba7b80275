"""The user's own token: made once, private to the user, found by the same user only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from undertow.errors import ConfigError
from undertow.security import parse_token, user_token, user_token_path


def test_the_user_token_is_made_once_with_mode_0600_and_names_the_user(undertow_home: Path):
    assert not user_token_path().exists()
    assert user_token(create=False) is None
    token = user_token()
    assert token is not None
    path = user_token_path()
    assert path.parent == undertow_home
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    name, secret = parse_token(token)
    assert name != "default"
    assert len(secret) >= 43  # 256 bits, URL-safe
    assert user_token() == token
    assert user_token(create=False) == token
    assert [p.name for p in undertow_home.iterdir()] == [path.name]  # no temporary left


def test_processes_that_start_together_agree_on_one_token(undertow_home: Path):
    code = "from undertow.security import user_token; print(user_token())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    tokens = {p.communicate(timeout=30)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(tokens) == 1
    assert tokens == {user_token(create=False)}


def test_a_token_file_others_can_read_is_refused_with_the_fix():
    user_token()
    path = user_token_path()
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"can be read by other users.*chmod 600"):
        user_token()


def test_another_user_of_the_machine_cannot_read_the_token(undertow_home: Path):
    token = user_token()
    assert token is not None
    assert stat.S_IMODE(undertow_home.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(user_token_path().stat().st_mode) == 0o600
    if os.getuid() != 0:  # only root can act as another user; the modes above are the proof
        return
    found = _as_nobody(
        "from undertow.security import user_token; print(user_token(create=False))",
        undertow_home,
    )
    assert found == "None"


def _as_nobody(code: str, home: Path) -> str:
    """Run ``code`` as the user nobody (the interpreter and undertow are loaded first, as
    root, since nobody may not read them), with the same undertow home; its output."""
    runner = (
        "import os, pwd, sys; import undertow, undertow.security\n"
        "user = pwd.getpwnam('nobody'); os.setgroups([]); os.setgid(user.pw_gid); "
        "os.setuid(user.pw_uid)\n"
        f"exec({code!r})\n"
    )
    env = dict(os.environ, UNDERTOW_HOME=str(home))
    out = subprocess.run(
        [sys.executable, "-c", runner], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_temporary_file_left_by_a_killed_process_is_no_obstacle(undertow_home: Path):
    (undertow_home / f".user.token.{os.getpid()}").write_text("half written")
    assert user_token() is not None


def test_only_addresses_of_this_machine_count_as_local():
    from undertow._util import is_local_address, is_loopback

    for address in ("tcp://127.0.0.1:1", "127.0.0.1:1", "tcp://[::1]:1", "http://localhost:1/x"):
        assert is_local_address(address), address
    assert is_local_address("ipc:///tmp/x")
    assert is_local_address("inproc://x")
    for address in ("tcp://127.evil.example:1", "http://10.0.0.1:1", "tcp://0.0.0.0:1", "x:1"):
        assert not is_local_address(address), address
    assert is_loopback("127.0.0.2")
    assert not is_loopback("127.example")


def test_a_server_can_be_asked_to_take_the_users_own_token() -> None:
    """For pickle that comes some other way than its functions (the patterns' messages)."""
    import undertow
    from undertow.security import new_token

    plain = undertow.Server(name="plain")
    assert plain.description()["user"] is None  # no pickle function: no token taken
    plain.accept_user_token()
    own = user_token(create=False)
    assert own is not None
    assert plain.description()["user"] == parse_token(own)[0]
    assert plain.authenticate(own) is not None
    token = new_token("alice")
    given = undertow.Server(name="given", token=token)
    given.accept_user_token()  # tokens given: nothing changes
    assert given.description()["user"] is None
    assert given.authenticate(own) is None
