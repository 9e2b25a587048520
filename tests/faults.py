"""A fault-injecting HTTP proxy on 127.0.0.1 in front of moto's S3 server.

Every request is forwarded to moto; for object GETs a `plan` function may pick
a fault to apply to moto's real answer before it reaches the client:

- "reset": headers and half the body, then a TCP reset
- "truncate": headers announcing the whole body, half of it, then a clean close
- "flip": the whole body with one byte changed (only a SHA-1 check notices)
- "stall": a pause of `STALL` seconds before answering normally
- "slowdown": 503 with S3's SlowDown error, "error500": 500 InternalError
- "denied": 403 AccessDenied, "missing": 404 NoSuchKey

`injected` counts what was applied, per fault and per object key; `gets`, every
object GET, per key.
"""

import http.client
import http.server
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

STALL = 1.5
TRANSIENT = ("reset", "truncate", "flip", "stall", "slowdown", "error500")
_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "error500": (500, "InternalError", "We encountered an internal error."),
    "denied": (403, "AccessDenied", "Access Denied"),
    "missing": (404, "NoSuchKey", "The specified key does not exist."),
}

# (key of the object, how many GETs of it came before) -> a fault or None
FaultPlan = Callable[[str, int], str | None]


class FaultProxy:
    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.plan = plan
        self.injected: Counter[str] = Counter()
        self.by_key: Counter[str] = Counter()
        self.client_ports: set[int] = set()  # the local ports of clients' connections
        self.gets: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FaultProxy":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def choose(self, method: str, path: str) -> str | None:
        parts = urlsplit(path)
        if method != "GET" or "list-type" in parts.query or parts.path.count("/") < 2:
            return None  # listings and bucket-level requests pass untouched
        key = parts.path.split("/", 2)[2]
        with self._lock:
            count = self.gets[key]
            self.gets[key] += 1
            fault = self.plan(key, count)
            if fault:
                self.injected[fault] += 1
                self.by_key[key] += 1
        return fault

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def forward(self) -> None:
                proxy.client_ports.add(self.client_address[1])
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy.choose(self.command, self.path)
                if fault in _ERRORS:
                    self.refuse(*_ERRORS[fault])
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    headers = [
                        (k, v)
                        for k, v in answer.getheaders()
                        if k.lower() not in ("transfer-encoding", "connection", "content-length")
                    ]
                    status = answer.status
                finally:
                    upstream.close()
                if fault == "stall":
                    time.sleep(STALL)
                if fault == "flip" and data:
                    data = bytearray(data)
                    data[len(data) // 2] ^= 0xFF
                    data = bytes(data)
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if fault in ("reset", "truncate"):
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    if fault == "reset":  # RST instead of FIN
                        linger = struct.pack("ii", 1, 0)
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def refuse(self, status: int, code: str, message: str) -> None:
                body = (
                    f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                    f"<Message>{message}</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

        return Handler


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up (a killed sync) is expected here, not news."""
