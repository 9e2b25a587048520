"""What the tests' local servers (the S3 stand-in, the CONNECT proxy) share.

Why: a test starts and stops these servers around every case, so stopping must be
quick and must leave no client hanging on to a stopped server through a kept-alive
connection or an open tunnel; and a client that hangs up mid-answer is routine in
tests, not a traceback on stderr. Written once here so both servers behave alike.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import socketserver
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["LocalServer"]

_POLL = 0.05  # how often serve_forever looks for shutdown(): 0.5 s by default, per server


class LocalServer(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) that `stop` ends completely:
    the connections it tracks (see `tracking`) are shut down along with it."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 512  # a hundred clients connecting at once must not see SYN drops

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's FQDN; not needed, maybe slow.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, args=(_POLL,), daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self._close_connections()
        self.server_close()

    @contextlib.contextmanager
    def tracking(self, *sockets: socket.socket) -> Iterator[None]:
        """Have `stop` shut `sockets` down while the block runs."""
        with self._open_lock:
            self._open.update(sockets)
        try:
            yield
        finally:
            with self._open_lock:
                self._open.difference_update(sockets)

    def _close_connections(self) -> None:
        """End idle keep-alive connections and open tunnels, so clients don't keep a
        dead server's."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer or mid-tunnel is expected in tests, not news."""
