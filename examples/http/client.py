"""HTTP example, the Python side: the usual client API, over HTTP.

Run:  python client.py http://127.0.0.1:PORT
"""

import sys

import undertow

with undertow.connect(sys.argv[1]) as client:
    print(f"add(2, 3) = {client.add(2, 3)}")
    print(f"help: add{client.add.__signature__}: {client.add.__doc__}")
    # the prints of the remote function appear here while it runs, before each item
    print("items:", list(client.countdown(3)))
    future = client.add.submit(40, 2)
    print(f"future: {future.result()}")
