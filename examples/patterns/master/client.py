"""The client: leaves exchange rates in the master's cache, then streams 1,000 orders to
the workers through the master, with a progress bar, and adds up the answers.

Run:  python client.py          (with master.py and one or more worker.py running)
"""

import collections
from typing import Any

import undertow

RATES = {"EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "USD": 1.0}
ORDERS = 1_000


def orders() -> list[list[Any]]:
    """The inputs, ``[currency, amount]``: a list, so that the progress bar knows how many
    there are (a generator works too, and is read only as the stream has room)."""
    currencies = sorted(RATES)
    return [[currencies[i % len(currencies)], 10 + i] for i in range(ORDERS)]


def main() -> None:
    master = undertow.connect("exchange")
    # The cache: one copy on the master, read by each worker (worker.py's rates()).
    master.set("rates", RATES)
    print("cached:", master.keys())

    total_cents = 0
    for result in undertow.stream(orders(), "exchange.to_usd", progress=True):
        total_cents += result.value  # in cents: the master's gather hook rounded it
    print(f"orders: {ORDERS}, total: {total_cents / 100:.2f} USD")

    # The same sum worked out here, to check the distributed one.
    local = sum(round(amount * RATES[currency] * 100) for currency, amount in orders())
    print("same as computed locally:", total_cents == local)

    # How the work was shared: the master's counters, per worker slot.
    shares: collections.Counter[str] = collections.Counter()
    for slot, figures in undertow.patterns.stats("exchange")["workers"].items():
        process = slot.rsplit("-", 2)[0]  # a slot's id: host-pid-random-slot
        shares[process] += figures["taken"]
    for process, taken in sorted(shares.items()):
        print(f"worker {process} took {taken} orders")
    master.close()


if __name__ == "__main__":
    main()
