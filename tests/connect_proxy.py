"""A CONNECT-only HTTP proxy that tunnels S3's host names to the local S3 stand-in.

Why: users reach S3 by its real names, often through an HTTPS proxy; tests can't
resolve those names to 127.0.0.1, but a client told to use a proxy asks the proxy,
not DNS. Pointing the client's ``HTTPS_PROXY`` at `ConnectProxy` sends every
``*.amazonaws.com`` CONNECT to the stand-in, so nothing else changes between a test
and a user's run, and any request that ignored the proxy (or strayed from S3) fails.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import http.server
import socket
import threading
from collections.abc import Mapping
from typing import Any

from local_servers import LocalServer

__all__ = ["ConnectProxy"]

CHUNK = 256 * 1024
"""The proxy's relay buffer: large bodies cross in few system calls."""


class ConnectProxy:
    """An HTTP proxy on 127.0.0.1 that only tunnels (CONNECT), the way HTTPS goes
    through a corporate proxy, and only to S3: ``*.amazonaws.com`` reaches the
    stand-in on `target_port`, hosts in `allow` reach their given local port, every
    other host gets 403, so a client that strays from S3 fails loudly.

    `auth` = (user, password) demands Basic ``Proxy-Authorization`` (else 407);
    `refuse_all` refuses every CONNECT (403). ``connects`` logs ("host:port", status).
    """

    def __init__(
        self,
        target_port: int,
        *,
        auth: tuple[str, str] | None = None,
        refuse_all: bool = False,
        allow: Mapping[str, int] | None = None,
    ) -> None:
        self.target_port = target_port
        self.auth = auth
        self.refuse_all = refuse_all
        self.allow = dict(allow or {})
        self.connects: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._server = _ProxyServer(self)
        self.port: int = self._server.port
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ConnectProxy:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    def log(self, target: str, status: int) -> None:
        """Record one CONNECT ("host:port") and the status it was answered with."""
        with self._lock:
            self.connects.append((target, status))

    def route(self, host: str) -> int | None:
        """The local port a CONNECT to `host` goes to, or None to refuse it."""
        host = host.lower().rstrip(".")
        if host in self.allow:
            return self.allow[host]
        if host == "amazonaws.com" or host.endswith(".amazonaws.com"):
            return self.target_port
        return None

    def authorized(self, header: str | None) -> bool:
        """Whether a Proxy-Authorization header carries `auth` (always, without one)."""
        if self.auth is None:
            return True
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (ValueError, binascii.Error):
            return False
        expected = f"{self.auth[0]}:{self.auth[1]}"
        return hmac.compare_digest(given.encode(), expected.encode())


class _ProxyServer(LocalServer):
    def __init__(self, proxy: ConnectProxy) -> None:
        self.proxy = proxy
        super().__init__(_ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer
    # Unbuffered reads: after CONNECT the bytes on the socket belong to the tunnel,
    # none may sit in a reader's buffer.
    rbufsize = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def refuse(self, status: int, reason: str, extra: Mapping[str, str] | None = None) -> None:
        body = f"{status} {reason}\n".encode()
        self.send_response(status, reason)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def do_CONNECT(self) -> None:
        proxy = self.server.proxy
        target = self.path
        host, _, port_text = target.rpartition(":")
        host = host.strip("[]")
        if not host or not port_text.isdigit():
            proxy.log(target, 400)
            self.refuse(400, "Bad Request")
            return
        if proxy.refuse_all:
            proxy.log(target, 403)
            self.refuse(403, "Forbidden")
            return
        if not proxy.authorized(self.headers.get("Proxy-Authorization")):
            proxy.log(target, 407)
            self.refuse(
                407, "Proxy Authentication Required", {"Proxy-Authenticate": 'Basic realm="test"'}
            )
            return
        port = proxy.route(host)
        if port is None:
            proxy.log(target, 403)
            self.refuse(403, "Forbidden")
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            proxy.log(target, 502)
            self.refuse(502, "Bad Gateway")
            return
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        proxy.log(target, 200)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        client = self.connection
        client.settimeout(None)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.closing(upstream), self.server.tracking(client, upstream):
            back = threading.Thread(target=_relay, args=(upstream, client), daemon=True)
            back.start()
            _relay(client, upstream)
            back.join()

    def not_allowed(self) -> None:
        self.refuse(405, "Method Not Allowed", {"Allow": "CONNECT"})

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = not_allowed


def _relay(source: socket.socket, destination: socket.socket) -> None:
    """Copy bytes one way until `source` ends; pass its end on as a half-close so the
    other direction can finish. An error (a reset) ends both directions."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    try:
        while True:
            count = source.recv_into(buffer)
            if not count:
                break
            destination.sendall(view[:count])
    except OSError:
        for sock in (source, destination):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(OSError):
        destination.shutdown(socket.SHUT_WR)
