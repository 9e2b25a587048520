"""A CRDS server stand-in: the JSON-RPC calls and file downloads the official crds
client makes of https://jwst-crds.stsci.edu, on 127.0.0.1, with faults on demand.

Built from real rules (`tests/data`) with synthetic references, by the same
`build_bucket` the S3 tests use (its objects collected here instead of uploaded),
so its `get_server_info` carries the same server_config and `download_metadata`.
What it speaks, as crds 14.0.3 speaks it (crds/client/proxy.py, api.py):

- POST `/json/<method>/<id>/`, body `{"jsonrpc": "1.0", "method", "params", "id"}`;
  the answer `{"id", "error": null, "result"}`, `error` `{"message": ...}` on a
  failure. `get_server_info` answers with server_config plus `mapping_url` and
  `reference_url` (`{observatory: URL}`); `get_mapping_names` and
  `get_reference_names` with a context's closure, as crds sync asks;
  `get_context_by_date` with the newest context of the history not after the
  date, else the operational one.
- GET (and HEAD) `/unchecked_get/{mappings,references}/<obs>/<name>`, honouring one
  `Range: bytes=A-B` (206) unless told to answer 200 whole.

Faults (`StandIn.faults`, changed by a test while the server runs): a delay before
each answer, 503 with Retry-After for the next N file GETs, a dropped connection
for the next N, and a redirect of every file GET to another path of the same
server, and a captive portal's page for every JSON-RPC call. `StandIn.requests`
records (method, path) of each request.
"""

from __future__ import annotations

import ast
import json
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from crds_s3_sync.demo import build_bucket
from crds_s3_sync.rules.mapping import parse_mapping

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Collector:
    """Stands in for boto3's client in `build_bucket`: keeps each object it is given."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: object) -> None:
        self.objects[Key] = Body


@dataclass
class Faults:
    delay: float = 0.0  # seconds before every answer
    busy: int = 0  # the next N file GETs answer 503 with Retry-After: retry_after
    retry_after: str = "1"
    drop: int = 0  # the next N file GETs close the connection without an answer
    redirect: bool = False  # file GETs answer 302 to /moved/<same path>
    redirect_to: str = ""  # ... at this base URL instead of the stand-in's own
    whole: bool = False  # Range ignored: 200 and the whole file
    portal: bool = False  # every POST answered 200 with a Latin-1 HTML page, as a captive portal
    rpc_error: str = ""  # every JSON-RPC call answered with this error message


@dataclass
class StandIn:
    observatory: str
    files: dict[str, bytes]  # "mappings/<obs>/<name>" and "references/<obs>/<name>"
    server_config: dict[str, Any]
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, str]] = field(default_factory=list)
    agents: set[str] = field(default_factory=set)  # the User-Agent headers seen
    url: str = ""
    files_url: str = ""  # where the answers say files are, if not here (a benchmark's nginx)
    connections: int = 0  # open now
    peak: int = 0  # the most ever open at once
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def opened(self, change: int) -> None:
        with self._lock:
            self.connections += change
            self.peak = max(self.peak, self.connections)

    def server_info(self) -> dict[str, Any]:
        """What the server answers to get_server_info: server_config and the URLs,
        each by observatory."""
        obs, files = self.observatory, self.files_url or self.url
        return {
            **self.server_config,
            "mapping_url": {obs: f"{files}/unchecked_get/mappings/{obs}/"},
            "reference_url": {obs: f"{files}/unchecked_get/references/{obs}/"},
        }

    def take(self, name: str) -> bool:
        """One of the next N of fault `name`, if any are left."""
        with self._lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                return True
        return False


def build_standin(rules: Path, observatory: str, reference_size: Any, **options: Any) -> StandIn:
    collector = _Collector()
    build_bucket(collector, "unused", "", rules, observatory, reference_size, **options)
    files, config = {}, {}
    for key, body in collector.objects.items():
        if key.startswith("config/"):
            config = ast.literal_eval(body.decode())
        else:
            files[key] = body
    return StandIn(observatory, files, config)


def _closure(standin: StandIn, context: str) -> tuple[list[str], list[str]]:
    """The mappings and references of `context`, as the server's database knows them."""
    mappings, references, level = set(), set(), [context]
    while level:
        name = level.pop()
        if name in mappings:
            continue
        mappings.add(name)
        text = standin.files[f"mappings/{standin.observatory}/{name}"].decode()
        mapping = parse_mapping(name, text)
        level += mapping.mappings
        references.update(mapping.references)
    return sorted(mappings), sorted(references)


def _rpc(standin: StandIn, method: str, params: list[Any]) -> Any:
    if method == "get_server_info":
        return standin.server_info()
    if method == "get_mapping_names":
        return _closure(standin, params[0])[0]
    if method == "get_reference_names":
        return _closure(standin, params[0])[1]
    if method == "get_context_by_date":
        date = str(params[0]).split("-", 1)[-1].replace("T", " ")
        history = standin.server_config.get("context_history", [])
        before = [entry for entry in history if str(entry[0]) <= date]
        return before[0][1] if before else standin.server_config["operational_context"]
    raise LookupError(f"method {method!r} is not served by this stand-in")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real server's front end
    standin: StandIn

    def log_message(self, *args: object) -> None:
        pass

    def handle(self) -> None:
        """A connection, counted while open: how many a client keeps at once."""
        self.standin.opened(+1)
        try:
            super().handle()
        finally:
            self.standin.opened(-1)

    def do_POST(self) -> None:
        self._record()
        if self.standin.faults.portal:
            page = b"<!DOCTYPE html><html>Sign in to the h\xf4tel's Wi-Fi</html>"  # Latin-1
            self._send(200, page, "text/html")
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        try:
            answer = {
                "id": body["id"],
                "error": None,
                "result": _rpc(self.standin, body["method"], body.get("params") or []),
            }
            if self.standin.faults.rpc_error:
                raise LookupError(self.standin.faults.rpc_error)
        except LookupError as exc:
            answer = {"id": body.get("id"), "error": {"message": str(exc)}, "result": None}
        self._send(200, json.dumps(answer).encode(), "application/json")

    def do_GET(self) -> None:
        self._file(send_body=True)

    def do_HEAD(self) -> None:
        self._file(send_body=False)

    def _record(self) -> None:
        self.standin.requests.append((self.command, self.path))
        self.standin.agents.add(self.headers.get("User-Agent", ""))
        if self.standin.faults.delay:
            time.sleep(self.standin.faults.delay)

    def _file(self, send_body: bool) -> None:
        self._record()
        standin = self.standin
        path = self.path.split("?", 1)[0]
        moved = path.startswith("/moved/")
        key = path.removeprefix("/moved").removeprefix("/unchecked_get/")
        data = standin.files.get(key)
        if data is None:
            self._send(404, b"<html><body>Not found</body></html>", "text/html", send_body)
            return
        if standin.faults.redirect and not moved:
            self.send_response(302)
            self.send_header("Location", f"{standin.faults.redirect_to or standin.url}/moved{path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if standin.take("busy"):
            self.send_response(503)
            self.send_header("Retry-After", standin.faults.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if standin.take("drop"):
            self.close_connection = True
            self.connection.shutdown(2)
            return
        wanted = _RANGE.match(self.headers.get("Range", ""))
        if wanted and not standin.faults.whole:
            start = int(wanted[1])
            end = min(int(wanted[2]) + 1 if wanted[2] else len(data), len(data))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self._body(data[start:end], "application/octet-stream", send_body)
            return
        self.send_response(200)
        self._body(data, "application/octet-stream", send_body)

    def _send(self, status: int, body: bytes, kind: str, send_body: bool = True) -> None:
        self.send_response(status)
        self._body(body, kind, send_body)

    def _body(self, body: bytes, kind: str, send_body: bool) -> None:
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


class Serving:
    """`with Serving(standin) as url:` the stand-in on 127.0.0.1 for the block; over
    TLS with `certificates` (a pair of PEM files), under the name `public` (say
    https://jwst-crds.stsci.edu, which a test's proxy tunnels to `port`)."""

    def __init__(
        self,
        standin: StandIn,
        certificates: tuple[Path, Path] | None = None,
        public: str = "",
    ) -> None:
        handler = type("Handler", (_Handler,), {"standin": standin})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_port
        if certificates is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*certificates)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        standin.url = public or f"http://127.0.0.1:{self.port}"
        self.standin = standin

    def __enter__(self) -> str:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.standin.url

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
