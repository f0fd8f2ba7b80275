"""The client of the standalone server: calls ``my_server.foo`` by name, three ways.

Run:  python client.py          (with server.py running; both use the same undertow home)
"""

import undertow


def main() -> None:
    # 1. A plain call, the way pylm's standalone client calls foo. Messages are Python
    #    values (strings, numbers, lists, dicts, arrays), not just bytes.
    server = undertow.connect("my_server")  # waits up to 30 s for the name to register
    print("Client got:", server.foo("a message"))

    # 2. The same function as a one-stage stream: any function of any service can be the
    #    target of undertow.map / undertow.stream. ordered=True keeps the input order.
    replies = undertow.map("my_server.foo", ["one", "two", "three"], ordered=True)
    print("Streamed:", list(replies))

    # 3. Each answer of a stream is a Result: .id is the input's position, .value its
    #    answer, or raises that input's error (the others are not affected).
    for result in undertow.stream([4, "five"], "my_server.foo", ordered=True):
        try:
            print(f"input {result.id}: {result.value}")
        except TypeError as exc:  # "you sent me " + 4 fails on the server, for input 0 only
            print(f"input {result.id} failed: {type(exc).__name__}")
    server.close()


if __name__ == "__main__":
    main()
