"""Quickstart server: plain Python functions, served to undertow clients.

Run:  python server.py [PORT]      (PORT 0, the default, picks any free port)
"""

import sys
import time

import undertow

# The name is shown to clients; it helps tell servers apart.
server = undertow.Server(name="quickstart")


# Registering a function is all it takes to serve it. Type hints and the docstring travel
# with it: clients see the real signature and can call help() on it.
@server.register
def add(x: float, y: float = 1.0) -> float:
    """Add two numbers."""
    return x + y


@server.register
def train(epochs: int = 3) -> float:
    """Pretend to train a model, printing progress; returns the final loss."""
    loss = 1.0
    for epoch in range(1, epochs + 1):
        time.sleep(0.1)
        loss /= 2
        # print() output is sent to the caller's terminal while the function runs.
        print(f"epoch {epoch}/{epochs}: loss={loss:.3f}")
    return loss


@server.register
def divide(x: float, y: float) -> float:
    """Divide x by y (try y=0 to see a remote error)."""
    return x / y


@server.register
def slow_square(x: int) -> int:
    """Square x, slowly: a good candidate for .submit()."""
    time.sleep(0.2)
    return x * x


# Options are set per function by glob; the first matching glob wins.
# Here every function whose name starts with "slow_" must finish within 5 seconds.
server.config({"slow_*": {"timeout": 5}})

if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    # Prints "undertow: serving 'quickstart' on tcp://127.0.0.1:PORT" once ready,
    # and stops cleanly on Ctrl-C (SIGINT) or SIGTERM.
    server.serve_forever("127.0.0.1", port)
