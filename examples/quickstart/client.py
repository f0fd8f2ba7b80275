"""Quickstart client: call the quickstart server's functions as if they were local.

Run:  python client.py tcp://127.0.0.1:PORT     (the address the server printed)
"""

import inspect
import sys

import undertow


def main(address: str) -> None:
    # connect() asks the server which functions it has; each becomes an attribute.
    with undertow.connect(address, timeout=10) as client:
        # 1. A plain call.
        print("add(2, 3) =", client.add(2, 3))

        # 2. Discovery: remote functions carry their real signature and docstring,
        #    so inspect.signature(), help(client.add) and tab completion all work.
        for name in ("add", "train", "divide", "slow_square"):
            fn = getattr(client, name)
            print(f"{name}{inspect.signature(fn)}: {inspect.getdoc(fn)}")

        # 3. Live output: what the remote function prints appears here as it happens.
        loss = client.train(epochs=3)
        print("final loss:", loss)

        # ... unless you ask for quiet, per call.
        client.train.options(output=False)(epochs=1)

        # 4. Remote errors: a builtin exception is raised as the same type here,
        #    with the server's traceback chained as its cause.
        try:
            client.divide(1, 0)
        except ZeroDivisionError as exc:
            print("caught ZeroDivisionError:", exc)
            print("the server's traceback, chained as the cause:", exc.__cause__)

        # 5. Futures: submit() starts calls without waiting; collect results later.
        futures = [client.slow_square.submit(i) for i in range(5)]
        print("squares:", [f.result() for f in futures])

        # A per-call deadline, in seconds.
        print("with a deadline:", client.slow_square.options(timeout=5)(7))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python client.py tcp://127.0.0.1:PORT")
    main(sys.argv[1])
