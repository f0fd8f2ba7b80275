"""The low-level layer: an async server with a table of named handlers, and ``rpc`` proxies.

::

    from undertow.core import HandlerServer, rpc

    async def main():
        server = HandlerServer({"add": lambda x, y: x + y})
        address = await server.listen("tcp://127.0.0.1:0")
        async with rpc(address) as remote:
            print(await remote.add(x=1, y=2))
        await server.close()
"""

from undertow.rpc import HandlerServer, Incoming, rpc

__all__ = ["HandlerServer", "Incoming", "rpc"]

for _name in __all__:
    globals()[_name].__module__ = __name__
