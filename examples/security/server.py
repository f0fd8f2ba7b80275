"""Security example: two users with tokens of their own, a rule per function, and pickle
only for signed callers.

Run (in this directory):

    undertow token new alice --append tokens
    undertow token new bob --append tokens
    UNDERTOW_TOKENS=tokens python server.py [PORT]

then `UNDERTOW_TOKENS=tokens python client.py ADDRESS` in another terminal.
"""

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import undertow
from undertow.security import TokenAuth, allow

# Every message must be signed with one of the tokens in $UNDERTOW_TOKENS; the name in a
# token (alice, bob) is the identity the rules below see.
server = undertow.Server(name="vault", auth=TokenAuth.from_env())

BALANCES = {"lab": 100, "travel": 20}


@server.register
def balance(account: str) -> int:
    """The balance of an account."""
    return BALANCES[account]


@server.register
def transfer(account: str, amount: int) -> int:
    """Move money out of an account; returns what is left."""
    BALANCES[account] -= amount
    return BALANCES[account]


@server.register
def reset() -> str:
    """Put every balance back (administrators only)."""
    BALANCES.update(lab=100, travel=20)
    return "reset"


@server.register
def run_python(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a function sent by the caller: pickle in and out, so signed callers only."""
    return fn(*args)


def small_unless_alice(
    identity: str | None, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> bool:
    """A rule sees who calls, what and with which arguments."""
    amount = kwargs.get("amount", args[1] if len(args) > 1 else 0)
    return identity == "alice" or amount <= 10


# Rules go with the other per-function options, by glob; the first matching glob wins.
server.config(
    {
        "reset": {"auth": allow("alice")},
        "transfer": {"auth": small_unless_alice},
        "run_*": {
            "input_serialization": "pickle",
            "output_serialization": "pickle",
            "auth": allow("alice"),  # asked before anything is unpickled
        },
    }
)

if __name__ == "__main__":
    # 127.0.0.1 by default; with tokens, host="0.0.0.0" would be allowed too.
    server.serve_forever(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
