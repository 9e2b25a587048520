"""An in-memory S3 that answers under S3's real host names, over TLS.

Why: moto behind ``--endpoint-url`` tests a path users never take. Users run the CLI
with no endpoint at all, so botocore picks the host (``<bucket>.s3.amazonaws.com``,
``<bucket>.s3.<region>.amazonaws.com``...), signs for the client's region, follows
S3's region redirects and verifies TLS. To exercise exactly that path offline, tests
point the client's HTTPS proxy at `connect_proxy.ConnectProxy`, which tunnels every
``*.amazonaws.com`` CONNECT to `S3StandIn` on 127.0.0.1, whose certificate (from
`tls_certificates.make_certificates`) is valid for S3's names under a test CA the
client is told to trust. Nothing else changes between a test and a user's run.

`S3StandIn` is small but strict where the real service is strict, because those are
the places a client goes wrong: SigV4 signatures (header and presigned forms,
checked in `sigv4_check` with botocore's own signer code, so a mismatch means the
client signed something other than what it sent), credential-scope regions, regional
endpoints (301 PermanentRedirect / 400 AuthorizationHeaderMalformed with
``x-amz-bucket-region``, what botocore's redirector feeds on), clock skew,
expired credentials and presigned URLs, anonymous access, throttling. Its error
bodies and headers follow S3's so that botocore parses them as it would S3's.
Signature Version 2 is refused (400 InvalidRequest, as S3 answers in regions and
for buckets without SigV2); note that botocore presigns S3 URLs with SigV2 in
older regions unless the client's config says ``signature_version="s3v4"``.

Time: ``skew`` seconds are added to the server's clock, for Date headers and every
time check, so a test can put the client's clock in the past or future.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import datetime as dt
import hashlib
import http.server
import json
import re
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from email.utils import formatdate
from typing import Any
from urllib.parse import quote_plus, unquote
from xml.sax.saxutils import escape

from local_servers import LocalServer
from s3_errors import S3Error, error_xml, xml_children
from sigv4_check import SigV4Check, claimed_credential
from tls_certificates import Certificates

__all__ = ["S3StandIn", "Seen"]


PAGE = 1000
"""ListObjectsV2's default and largest page."""
_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"


@dataclass(frozen=True)
class Seen:
    """One request as the stand-in saw it, for tests to assert on what a client did.

    `time` is the real (unskewed) ``time.time()`` at arrival; `path` is as sent
    (percent-encoded) without the query, of which only the parameter names are kept,
    in order, in `query`. `access_key` and `region` are what a signed request's
    credential scope names (recorded even when the answer came before any signature
    check, as a 301 does); `error` is the S3 error code of the answer, if any.
    """

    time: float
    method: str
    host: str
    path: str
    query: tuple[str, ...]
    access_key: str | None
    status: int
    region: str | None = None
    error: str | None = None


@dataclass
class _Object:
    data: bytes
    etag: str
    last_modified: float


@dataclass
class _Bucket:
    name: str
    region: str
    public: bool
    objects: dict[str, _Object] = field(default_factory=dict)


@dataclass
class _Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    length: int | None = None  # Content-Length of a HEAD: the size of the body it stands for
    error: str | None = None


@dataclass(frozen=True)
class _Target:
    """Which bucket and key a request addresses, and what its host says about region."""

    bucket: str | None
    key: str
    region: str | None  # the endpoint's region; None for localhost (any region)
    regional: bool  # a regional endpoint: S3 redirects requests for other regions' buckets


_GLOBAL_HOST = re.compile(r"^(?:(?P<bucket>.+)\.)?s3\.amazonaws\.com$")
_REGIONAL_HOST = re.compile(
    r"^(?:(?P<bucket>.+)\.)?s3(?:-fips)?(?:\.dualstack)?\."
    r"(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com$"
)
_LOCAL_HOSTS = ("localhost", "127.0.0.1")
_UNSUPPORTED_SUBRESOURCES = frozenset(
    {"acl", "tagging", "attributes", "torrent", "retention", "legal-hold", "uploadId", "uploads"}
)


def _locate(host: str, raw_path: str) -> _Target:
    """Bucket, key and endpoint region from the Host header and the path, the way S3
    reads them: a bucket label in front of an S3 host is virtual-hosted style,
    otherwise the first path segment names the bucket (path style)."""
    name = host.lower()
    if name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    bucket: str | None
    if name in _LOCAL_HOSTS:
        bucket, region, regional = None, None, False
    elif found := _GLOBAL_HOST.match(name):
        bucket, region, regional = found["bucket"], "us-east-1", False
    elif found := _REGIONAL_HOST.match(name):
        bucket, region, regional = found["bucket"], found["region"], True
    else:
        raise S3Error(400, "InvalidURI", f"Couldn't parse the specified URI: {host} is not S3.")
    path = raw_path or "/"
    if bucket is not None:
        return _Target(bucket, unquote(path[1:]), region, regional)
    first, _, rest = path[1:].partition("/")
    return _Target(unquote(first) or None, unquote(rest), region, regional)


def _permanent_redirect(bucket: _Bucket) -> S3Error:
    """S3's answer to a regional endpoint addressing a bucket of another region."""
    if bucket.region == "us-east-1":
        endpoint = f"{bucket.name}.s3.amazonaws.com"
    else:
        endpoint = f"{bucket.name}.s3.{bucket.region}.amazonaws.com"
    return S3Error(
        301,
        "PermanentRedirect",
        "The bucket you are attempting to access must be addressed using the specified"
        " endpoint. Please send all future requests to this endpoint.",
        {"Endpoint": endpoint, "Bucket": bucket.name},
        {"x-amz-bucket-region": bucket.region},
    )


def _parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs in order. '+' stays '+': SigV4 canonicalisation
    decodes percent escapes only, and botocore never sends '+' for a space."""
    pairs = []
    for piece in raw_query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


class S3StandIn:
    """In-memory S3 on 127.0.0.1 over TLS, answering under S3's host names.

    Use as ``with S3StandIn(certs) as s3:``; ``s3.port`` is the HTTPS port that
    `ConnectProxy` tunnels to. Buckets, objects and credentials are added with
    `add_bucket`, `put` and `add_credentials`; `requests` records what came in.
    Object GET/HEAD (with Range), ListObjectsV2, HeadBucket and GetBucketLocation
    are served; anything else is answered as an error, never silently accepted.
    """

    def __init__(self, certs: Certificates, *, skew: float = 0.0) -> None:
        self.skew = skew
        self.requests: list[Seen] = []
        self.first_request_at: float | None = None
        self._buckets: dict[str, _Bucket] = {}
        self._auth = SigV4Check(self.now)
        self._throttle = _Throttle()
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert, certs.key)
        self._server = _TLSServer(context, self)
        self.port: int = self._server.port

    def __enter__(self) -> S3StandIn:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    # ---- state

    def now(self) -> float:
        """The server's clock: real time plus `skew`."""
        return time.time() + self.skew

    def add_bucket(self, name: str, region: str = "us-east-1", public: bool = False) -> None:
        """A bucket in `region`; a `public` one lets anonymous clients read and list it."""
        with self._lock:
            self._buckets[name] = _Bucket(name, region, public)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """Store an object (replacing any under the same key); its ETag is its MD5."""
        etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        with self._lock:
            self._buckets[bucket].objects[key] = _Object(data, etag, self.now())

    def remove(self, bucket: str, key: str) -> None:
        """Delete an object, as a bucket that lost a file would."""
        with self._lock:
            del self._buckets[bucket].objects[key]

    def add_credentials(
        self,
        access_key: str,
        secret: str,
        token: str | None = None,
        expires_at: float | None = None,
    ) -> None:
        """Accept `access_key`/`secret` (and, for temporary credentials, exactly
        `token`) until `expires_at` (server clock, epoch seconds) if given."""
        self._auth.add(access_key, secret, token, expires_at)

    def expire(self, access_key: str) -> None:
        """Make `access_key`'s credentials expired from now on (ExpiredToken)."""
        self._auth.expire(access_key)

    def throttle(self, count: int, retry_after: int | None = 1) -> None:
        """The next `count` object GETs get 503 SlowDown (with Retry-After if given)."""
        self._throttle.set(count, retry_after)

    # ---- one request

    def _answer(
        self, method: str, host: str, target: str, headers: Message, body: bytes
    ) -> _Answer:
        """The whole answer to one request; logged in `requests` before it is sent,
        so a client that has its answer can already see it in the log."""
        arrived = time.time()
        with self._lock:
            if self.first_request_at is None:
                self.first_request_at = arrived
        request_id = secrets.token_hex(8).upper()
        raw_path, _, raw_query = target.partition("?")
        query = _parse_query(raw_query)
        # Logged whatever the answer, even a redirect given before any signature check.
        access_key, region = claimed_credential(headers, query)
        try:
            answer = self._dispatch(method, host, raw_path, query, headers, body)
        except S3Error as error:
            answer = _error_answer(error, method, request_id)
        except Exception as bug:  # a stand-in bug: say so, rather than drop the connection
            failure = S3Error(500, "InternalError", f"S3 stand-in failure: {bug!r}")
            answer = _error_answer(failure, method, request_id)
        answer.headers["x-amz-request-id"] = request_id
        answer.headers["x-amz-id-2"] = base64.b64encode(request_id.encode() * 4).decode()
        with self._lock:
            self.requests.append(
                Seen(
                    time=arrived,
                    method=method,
                    host=host,
                    path=raw_path,
                    query=tuple(name for name, _ in query),
                    access_key=access_key,
                    status=answer.status,
                    region=region,
                    error=answer.error,
                )
            )
        return answer

    def _dispatch(
        self,
        method: str,
        host: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Message,
        body: bytes,
    ) -> _Answer:
        where = _locate(host, raw_path)
        if where.bucket is None:
            raise S3Error(501, "NotImplemented", "The stand-in serves no ListBuckets.")
        with self._lock:
            bucket = self._buckets.get(where.bucket)
        if bucket is None:
            raise S3Error(
                404,
                "NoSuchBucket",
                "The specified bucket does not exist",
                {"BucketName": where.bucket},
            )
        operation = _operation(method, where.key, dict(query))
        if where.regional and where.region != bucket.region:
            raise _permanent_redirect(bucket)
        # GetBucketLocation is how clients learn a region: S3 answers it for any
        # bucket when signed for us-east-1 at the global endpoint.
        also = {"us-east-1"} if operation == "GetBucketLocation" and not where.regional else set()
        access_key = self._auth.authenticate(
            method, host, raw_path, query, headers, body, bucket.region, also
        )
        if access_key is None and not (
            bucket.public
            and operation in ("GetObject", "HeadObject", "ListObjectsV2", "HeadBucket")
        ):
            raise S3Error(
                403,
                "AccessDenied",
                "Access Denied",
                headers=_head_region(method, where, bucket),
            )
        if operation in ("GetObject", "HeadObject"):
            with self._lock:
                found = bucket.objects.get(where.key)
            if method == "GET":
                self._throttle.check()
            return _object_answer(found, where.key, headers, method)
        if operation == "ListObjectsV2":
            with self._lock:
                objects = dict(bucket.objects)
            return _list_objects_v2(bucket.name, objects, dict(query))
        return _bucket_answer(operation, method, where, bucket)


class _Throttle:
    """How many more object GETs get 503 SlowDown, and the Retry-After they carry."""

    def __init__(self) -> None:
        self._left = 0
        self._retry_after: int | None = None
        self._lock = threading.Lock()

    def set(self, count: int, retry_after: int | None) -> None:
        with self._lock:
            self._left = count
            self._retry_after = retry_after

    def check(self) -> None:
        """Raise SlowDown if this GET is one of those throttled."""
        with self._lock:
            if self._left > 0:
                self._left -= 1
                slow = {} if self._retry_after is None else {"Retry-After": str(self._retry_after)}
                raise S3Error(503, "SlowDown", "Please reduce your request rate.", headers=slow)


def _error_answer(error: S3Error, method: str, request_id: str) -> _Answer:
    """`error` as S3 sends it: the XML body (none for HEAD) naming this request."""
    headers = {**error.headers}
    body = b""
    if method != "HEAD":  # S3 answers HEAD errors with the status and headers only
        children = [
            ("Code", error.code),
            ("Message", error.message),
            *error.fields.items(),
            ("RequestId", request_id),
            ("HostId", base64.b64encode(request_id.encode() * 4).decode()),
        ]
        body = error_xml(children)
        headers["Content-Type"] = "application/xml"
    return _Answer(error.status, headers, body, length=0, error=error.code)


def _operation(method: str, key: str, query: dict[str, str]) -> str:
    """The S3 operation a request asks for, from its method, key and subresources."""
    if method not in ("GET", "HEAD"):
        return "Unsupported"
    if query.keys() & _UNSUPPORTED_SUBRESOURCES:
        raise S3Error(
            501,
            "NotImplemented",
            "A header you provided implies functionality that is not implemented",
        )
    if key:
        return "GetObject" if method == "GET" else "HeadObject"
    if method == "HEAD":
        return "HeadBucket"
    if "location" in query:
        return "GetBucketLocation"
    if query.get("list-type") == "2":
        return "ListObjectsV2"
    raise S3Error(
        501,
        "NotImplemented",
        "The stand-in serves ListObjectsV2 (list-type=2) only, not this bucket request.",
    )


def _head_region(method: str, where: _Target, bucket: _Bucket) -> dict[str, str]:
    """HeadBucket answers carry the bucket's region whatever their status."""
    if method == "HEAD" and not where.key:
        return {"x-amz-bucket-region": bucket.region}
    return {}


def _bucket_answer(operation: str, method: str, where: _Target, bucket: _Bucket) -> _Answer:
    """HeadBucket and GetBucketLocation; any other operation is not allowed."""
    if operation == "HeadBucket":
        return _Answer(
            200, {"x-amz-bucket-region": bucket.region, "x-amz-access-point-alias": "false"}
        )
    if operation == "GetBucketLocation":
        # us-east-1 is the empty constraint, for historical reasons, as in S3.
        text = "" if bucket.region == "us-east-1" else bucket.region
        location = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<LocationConstraint xmlns="{_NAMESPACE}">{escape(text)}</LocationConstraint>'
        ).encode()
        return _Answer(200, {"Content-Type": "application/xml"}, location)
    raise S3Error(
        405,
        "MethodNotAllowed",
        "The specified method is not allowed against this resource.",
        {"Method": method, "ResourceType": "OBJECT" if where.key else "BUCKET"},
        {"Allow": "GET, HEAD"},
    )


def _object_answer(found: _Object | None, key: str, headers: Message, method: str) -> _Answer:
    """GetObject or HeadObject, whole or the one byte range asked for."""
    if found is None:
        raise S3Error(404, "NoSuchKey", "The specified key does not exist.", {"Key": key})
    size = len(found.data)
    answer_headers = {
        "Content-Type": "binary/octet-stream",
        "ETag": found.etag,
        "Last-Modified": formatdate(found.last_modified, usegmt=True),
        "Accept-Ranges": "bytes",
    }
    wanted = _byte_range(headers.get("Range"), size)
    if wanted is None:
        return _Answer(200, answer_headers, found.data if method == "GET" else b"", size)
    if wanted == (-1, -1):
        raise S3Error(
            416,
            "InvalidRange",
            "The requested range is not satisfiable",
            {"RangeRequested": headers.get("Range", ""), "ActualObjectSize": str(size)},
            {"Content-Range": f"bytes */{size}"},
        )
    first, last = wanted
    answer_headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    part = found.data[first : last + 1]
    return _Answer(206, answer_headers, part if method == "GET" else b"", len(part))


def _list_objects_v2(name: str, objects: dict[str, _Object], query: dict[str, str]) -> _Answer:
    """One ListObjectsV2 page of `objects` (a snapshot of bucket `name`'s)."""
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    encoding = query.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error(400, "InvalidArgument", "Invalid Encoding Method specified in Request")
    try:
        max_keys = min(int(query.get("max-keys", PAGE)), PAGE)
    except ValueError:
        max_keys = -1
    if max_keys < 0:
        raise S3Error(
            400,
            "InvalidArgument",
            "Provided max-keys not an integer or within integer range",
            {"ArgumentName": "max-keys", "ArgumentValue": query.get("max-keys", "")},
        )
    after = query.get("start-after", "")
    skip: str | None = None  # a common prefix returned on an earlier page
    token = query.get("continuation-token")
    if token is not None:
        try:
            state = json.loads(base64.urlsafe_b64decode(token.encode()))
            after = max(after, state["after"])
            skip = state.get("skip")
        except (ValueError, KeyError, TypeError, binascii.Error) as bad:
            raise S3Error(
                400,
                "InvalidArgument",
                "The continuation token provided is incorrect",
                {"ArgumentName": "continuation-token"},
            ) from bad
    keys = sorted(objects)

    contents: list[str] = []
    prefixes: list[str] = []
    last: tuple[str, str | None] | None = None  # (after, skip) of the last entry
    truncated = False
    start = max(bisect.bisect_left(keys, prefix), bisect.bisect_right(keys, after))
    for index in range(start, len(keys)):
        key = keys[index]
        if not key.startswith(prefix):
            if key > prefix:
                break
            continue
        if skip is not None and key.startswith(skip):
            continue
        common = None
        if delimiter:
            at = key.find(delimiter, len(prefix))
            if at >= 0:
                common = key[: at + len(delimiter)]
                if prefixes and prefixes[-1] == common:
                    continue
        if max_keys == 0:
            break
        if len(contents) + len(prefixes) == max_keys:
            truncated = True
            break
        if common is None:
            contents.append(key)
            last = (key, None)
        else:
            prefixes.append(common)
            last = (common, common)

    def encode(value: str) -> str:
        return quote_plus(value, safe="/") if encoding == "url" else value

    children: list[tuple[str, str]] = [("Name", name), ("Prefix", encode(prefix))]
    if token is not None:
        children.append(("ContinuationToken", token))
    if truncated and last is not None:
        state = {"after": last[0], "skip": last[1]}
        next_token = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
        children.append(("NextContinuationToken", next_token))
    children += [
        ("KeyCount", str(len(contents) + len(prefixes))),
        ("MaxKeys", str(max_keys)),
    ]
    if delimiter:
        children.append(("Delimiter", encode(delimiter)))
    children.append(("IsTruncated", "true" if truncated else "false"))
    if encoding:
        children.append(("EncodingType", encoding))
    if "start-after" in query:
        children.append(("StartAfter", encode(query["start-after"])))
    parts = [xml_children(children)]
    for key in contents:
        item = objects[key]
        parts.append(
            "<Contents>"
            + xml_children(
                [
                    ("Key", encode(key)),
                    ("LastModified", _iso_ms(item.last_modified)),
                    ("ETag", item.etag),
                    ("Size", str(len(item.data))),
                    ("StorageClass", "STANDARD"),
                ]
            )
            + "</Contents>"
        )
    for common in prefixes:
        parts.append(f"<CommonPrefixes><Prefix>{escape(encode(common))}</Prefix></CommonPrefixes>")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<ListBucketResult xmlns="{_NAMESPACE}">{"".join(parts)}</ListBucketResult>'
    ).encode()
    return _Answer(200, {"Content-Type": "application/xml"}, body)


def _iso_ms(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) of a single ``bytes=`` range; None to send the whole object (no
    header, or one S3 ignores: malformed or several ranges); (-1, -1) if unsatisfiable."""
    if not header:
        return None
    found = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not found or (not found[1] and not found[2]):
        return None
    if not found[1]:  # the last N bytes
        suffix = int(found[2])
        if suffix == 0:
            return (-1, -1)
        return (max(size - suffix, 0), size - 1) if size else (-1, -1)
    first = int(found[1])
    last = int(found[2]) if found[2] else size - 1
    if last < first:
        return None
    if first >= size:
        return (-1, -1)
    return first, min(last, size - 1)


class _TLSServer(LocalServer):
    """A LocalServer whose connections are TLS, handshaken in the connection's own
    thread (a wrapped listening socket would handshake in the accept loop, so one
    slow client would stall every other)."""

    def __init__(self, context: ssl.SSLContext, standin: S3StandIn) -> None:
        self.context = context
        self.standin = standin
        super().__init__(_S3Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(60)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # e.g. a client that does not trust the test CA
        # Tracked while served: stopping the server ends idle keep-alive connections.
        with contextlib.closing(tls), self.tracking(tls):
            self.RequestHandlerClass(tls, client_address, self)


class _S3Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TLSServer
    timeout = 60  # an idle keep-alive connection is closed after this

    def version_string(self) -> str:
        return "AmazonS3"

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header follows the server's (skewed) clock, as a skewed S3 would.
        return formatdate(
            self.server.standin.now() if timestamp is None else timestamp, usegmt=True
        )

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            self.close_connection = True

    def serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # a body we cannot skip over
        answer = self.server.standin._answer(
            self.command, self.headers.get("Host", ""), self.path, self.headers, body
        )
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if self.command == "HEAD":
            length = len(answer.body) if answer.length is None else answer.length
        else:
            length = len(answer.body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD" and answer.body:
            self.wfile.write(answer.body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = serve
