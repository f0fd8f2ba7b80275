"""A standalone server with one function, ``foo``, found by its name ``my_server``.

Run:  python server.py                       (or: python -m undertow.service server.py)

It prints ``undertow: service 'my_server' (...) serving on tcp://127.0.0.1:PORT`` once it is
registered, and stops on Ctrl-C or SIGTERM. Clients need no address: they ask the registry
(in the undertow home, ``~/.undertow`` unless UNDERTOW_HOME says otherwise) for the name.
"""

import logging

from undertow.service import Expose, ServiceHost

logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("my_server")


@Expose()  # a class marked like this is a service; its name is the class's
class my_server:
    @Expose()  # and each marked method is a function clients may call
    def foo(self, message: str) -> str:
        """Answer with what was sent, prefixed."""
        log.warning("foo got %r", message)
        return "you sent me " + message


if __name__ == "__main__":
    ServiceHost([my_server()]).serve_forever()  # port 0: any free port; the registry knows it
