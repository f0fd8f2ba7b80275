"""A worker of the master ``exchange``: converts orders to US dollars.

Run:  python worker.py          (as many as you like, in any order, before or after the
                                 master: a worker looks the master up by name until found)

It takes messages from the master as fast as it gets through them (a slow worker is given
less), answers them, and stops on Ctrl-C or SIGTERM after handing back what it holds.
"""

import functools
import signal
import time
from typing import Any

import undertow


@functools.cache  # read once per worker process, on its first order
def rates() -> dict[str, float]:
    """The rates the client left in the master's cache (dollars for one unit)."""
    table: dict[str, float] = undertow.connect("exchange").get("rates")
    return table


def to_usd(order: list[Any]) -> float:
    """One order, ``[currency, amount]``, in dollars."""
    currency, amount = order
    time.sleep(0.002)  # stands in for real work, so that both workers get a share
    return float(amount * rates()[currency])


if __name__ == "__main__":
    # SIGTERM stops the worker the way Ctrl-C does: run() returns once the slots are done
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    worker = undertow.MasterWorker("exchange", [to_usd], slots=2)
    print("worker: serving to_usd for the master 'exchange'", flush=True)
    worker.run()
    print(f"worker: stopped after {worker.answered} orders", flush=True)
