"""The master: takes the messages streamed to ``exchange.FUNCTION`` and hands them to the
workers that join it; its cache holds what every worker needs (here, exchange rates).

Run:  python master.py

It prints ``undertow: service 'exchange' (...) serving on tcp://...`` once it is registered,
and stops on Ctrl-C or SIGTERM. Workers and clients find it by its name.
"""

import undertow


def to_cents(dollars: float) -> int:
    """The gather hook: runs on the master for each worker's answer, and what it returns is
    what goes on to the client (here, whole cents, so that totals add up exactly)."""
    return round(dollars * 100)


if __name__ == "__main__":
    # scatter=... would be the other hook: what to send to workers instead of each input.
    undertow.Master("exchange", gather=to_cents).serve_forever()
