"""A TCP relay that counts the bytes it carries: what a client's connections really received."""

from __future__ import annotations

import contextlib
import socket
import threading


class CountingRelay:
    """Listens on a free port of 127.0.0.1 and relays each connection to ``target``
    (``host``, ``port``), counting bytes each way (and, with ``record``, keeping them)."""

    def __init__(self, target: tuple[str, int], *, record: bool = False) -> None:
        self.target = target
        self.to_client = 0  # bytes from the server to the client
        self.to_server = 0
        #: with ``record``: every byte carried, each way (what an eavesdropper would see)
        self.seen: dict[bool, bytearray] | None = (
            {True: bytearray(), False: bytearray()} if record else None
        )
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{self.port}"
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.target, timeout=10)
            server.settimeout(None)
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, to_client: bool) -> None:
        while True:
            try:
                chunk = source.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                for sock in (source, sink):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return
            with self._lock:
                if to_client:
                    self.to_client += len(chunk)
                else:
                    self.to_server += len(chunk)
                if self.seen is not None:
                    self.seen[to_client] += chunk
            try:
                sink.sendall(chunk)
            except OSError:
                return

    def received(self) -> int:
        """Bytes the client has received through the relay so far."""
        with self._lock:
            return self.to_client

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
