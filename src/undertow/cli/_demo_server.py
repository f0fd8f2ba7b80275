"""The server half of ``undertow demo``; run as ``python -m undertow.cli._demo_server``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from undertow.rpc import Server

server = Server(name="demo", token=os.environ.get("UNDERTOW_DEMO_TOKEN") or None)


@server.register
def train(epochs: int = 3, lr: float = 0.1) -> dict[str, float]:
    """Pretend to train a model, printing progress as it goes."""
    loss = 1.0
    for epoch in range(1, epochs + 1):
        loss *= 1 - lr * 3
        print(f"  [remote] epoch {epoch}/{epochs}: loss={loss:.3f}", flush=True)
        time.sleep(0.15)
    print("  [remote] a warning on stderr", file=sys.stderr)
    return {"loss": round(loss, 4), "epochs": epochs}


@server.register
def divide(a: float, b: float) -> float:
    """Divide a by b (try b=0)."""
    return a / b


@server.register
def countdown(n: int) -> Iterator[int]:
    """Yield n, n-1, ... 1, one every 0.1 s."""
    for i in range(n, 0, -1):
        time.sleep(0.1)
        yield i


@server.register
def stats_np(array: Any) -> dict[str, float]:
    """Mean and standard deviation of a numpy array."""
    return {"mean": float(array.mean()), "std": float(array.std()), "n": int(array.size)}


@server.register
def scale_np(array: Any, factor: float) -> Any:
    """Return the array multiplied by factor."""
    return array * factor


if server.authenticates:
    server.config({"*_np": {"input_serialization": "pickle", "output_serialization": "pickle"}})


if __name__ == "__main__":
    server.serve_forever("127.0.0.1", 0)
