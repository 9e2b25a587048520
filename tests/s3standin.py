"""An S3 stand-in that answers under S3's real host names, over TLS, behind a CONNECT proxy.

Why: moto behind ``--endpoint-url`` tests a path users never take. Users run the CLI
with no endpoint at all, so botocore picks the host (``<bucket>.s3.amazonaws.com``,
``<bucket>.s3.<region>.amazonaws.com``...), signs for the client's region, follows
S3's region redirects and verifies TLS. To exercise exactly that path offline, tests
point the client's HTTPS proxy at `ConnectProxy`, which tunnels every
``*.amazonaws.com`` CONNECT to `S3StandIn` on 127.0.0.1, whose certificate (from
`make_certificates`) is valid for S3's names under a test CA the client is told to
trust. Nothing else changes between a test and a user's run.

`S3StandIn` is small but strict where the real service is strict, because those are
the places a client goes wrong: SigV4 signatures (header and presigned forms,
checked with botocore's own signer code, so a mismatch means the client signed
something other than what it sent), credential-scope regions, regional endpoints
(301 PermanentRedirect / 400 AuthorizationHeaderMalformed with
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
import hmac
import http.server
import ipaddress
import json
import re
import secrets
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote
from xml.sax.saxutils import escape

from botocore.auth import SIGV4_TIMESTAMP, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "REGIONS",
    "Certificates",
    "ConnectProxy",
    "S3StandIn",
    "Seen",
    "make_certificates",
    "s3_host_names",
]

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
"""Regions whose endpoints the server certificate covers (and the stand-in parses)."""

MAX_SKEW = 15 * 60
"""S3's tolerance, in seconds, between a request's X-Amz-Date and the server's clock."""

PAGE = 1000
"""ListObjectsV2's default and largest page."""

CHUNK = 256 * 1024
"""The proxy's relay buffer: large bodies cross in few system calls."""

MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
_POLL = 0.05  # how often serve_forever looks for shutdown(): 0.5 s by default, per server
_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_ALGORITHM = "AWS4-HMAC-SHA256"
_MALFORMED_CREDENTIAL = (
    'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
)


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Certificates:
    """PEM files: the test CA (what clients are told to trust) and the server's pair."""

    ca: Path
    cert: Path
    key: Path


def s3_host_names() -> list[str]:
    """The DNS names the server certificate must cover: every S3 endpoint form botocore
    may choose for REGIONS (global, regional, dual-stack, FIPS), bare and with a
    bucket label in front (virtual-hosted style)."""
    names = ["s3.amazonaws.com", "*.s3.amazonaws.com"]
    for region in REGIONS:
        for base in (f"s3.{region}", f"s3.dualstack.{region}", f"s3-fips.{region}"):
            names += [f"{base}.amazonaws.com", f"*.{base}.amazonaws.com"]
    return names


_certificates: dict[Path, Certificates] = {}
_certificates_lock = threading.Lock()


def make_certificates(directory: Path) -> Certificates:
    """A test CA and a server certificate it signed, written under `directory`.

    Made once per directory and process (a session fixture calls this once; later
    calls return the same files). EC P-256 keys keep it fast. The extensions are
    the ones strict verifiers insist on (Python's ``VERIFY_X509_STRICT``, OpenSSL 3):
    a CA with BasicConstraints ca=True and keyCertSign, a leaf with ca=False,
    serverAuth and subject/authority key identifiers linking the two.
    """
    directory = Path(directory).resolve()
    with _certificates_lock:
        made = _certificates.get(directory)
        if made is None or not all(p.is_file() for p in (made.ca, made.cert, made.key)):
            made = _certificates[directory] = _write_certificates(directory)
        return made


def _write_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    # A day back tolerates a client whose clock (or a test's skew) runs behind.
    not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "crds-s3-sync tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, "crds-s3-sync test CA"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), True)
        .add_extension(ca_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in [*s3_host_names(), "localhost"]]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3.amazonaws.com")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    made = Certificates(
        ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server-key.pem"
    )
    made.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    made.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    made.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    made.key.chmod(0o600)
    return made


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --------------------------------------------------------------------------- the S3 stand-in


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


class S3Error(Exception):
    """An S3 error answer: raised while handling a request, rendered as S3 renders it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})


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
class _Key:
    secret: str
    token: str | None
    expires_at: float | None


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


@dataclass(frozen=True)
class _Signature:
    """A SigV4 signature as a request carries it, in the Authorization header or query."""

    presigned: bool
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str
    token: str | None
    expires: int = 0


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


def _endpoint_of(bucket: _Bucket) -> str:
    """The host S3 names in a PermanentRedirect for `bucket`."""
    if bucket.region == "us-east-1":
        return f"{bucket.name}.s3.amazonaws.com"
    return f"{bucket.name}.s3.{bucket.region}.amazonaws.com"


def _parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs in order. '+' stays '+': SigV4 canonicalisation
    decodes percent escapes only, and botocore never sends '+' for a space."""
    pairs = []
    for piece in raw_query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def _claimed_credential(
    headers: Message, query: list[tuple[str, str]]
) -> tuple[str | None, str | None]:
    """(access key, region) a request's credential scope names, if it has one."""
    credential = dict(query).get("X-Amz-Credential")
    if credential is None:
        found = re.search(r"Credential=([^,\s]+)", headers.get("Authorization") or "")
        credential = found[1] if found else None
    if not credential:
        return None, None
    scope = credential.split("/")
    return scope[0], scope[2] if len(scope) > 2 else None


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_ms(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _sigv4_time(stamp: str) -> float | None:
    try:
        return dt.datetime.strptime(stamp, SIGV4_TIMESTAMP).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def _error_xml(children: Iterable[tuple[str, str]]) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{_xml_children(children)}</Error>'
    ).encode()


class _ExactHeadersMixin:
    """Sign exactly the headers a request's SignedHeaders lists, as S3 does.

    botocore's own `headers_to_sign` drops a few names (User-Agent, Expect...) and
    adds Host when missing, which is right for a client choosing what to sign but
    wrong for a server checking what another client chose.
    """

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        chosen = HTTPHeaders()
        for name in request.context["signed_headers"]:
            for value in request.headers.get_all(name) or []:
                chosen[name] = value
        return chosen


class _HeaderSigner(_ExactHeadersMixin, S3SigV4Auth):
    pass


class _QuerySigner(_ExactHeadersMixin, S3SigV4QueryAuth):
    pass


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
        self._keys: dict[str, _Key] = {}
        self._throttled = 0
        self._retry_after: int | None = None
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert, certs.key)
        self._server = _TLSServer(("127.0.0.1", 0), _S3Handler, context, self)
        self.port: int = self._server.server_address[1]

    def __enter__(self) -> S3StandIn:
        threading.Thread(target=self._server.serve_forever, args=(_POLL,), daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()

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
        with self._lock:
            self._keys[access_key] = _Key(secret, token, expires_at)

    def expire(self, access_key: str) -> None:
        """Make `access_key`'s credentials expired from now on (ExpiredToken)."""
        with self._lock:
            self._keys[access_key].expires_at = self.now() - 1

    def throttle(self, count: int, retry_after: int | None = 1) -> None:
        """The next `count` object GETs get 503 SlowDown (with Retry-After if given)."""
        with self._lock:
            self._throttled = count
            self._retry_after = retry_after

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
        access_key, region = _claimed_credential(headers, query)
        try:
            answer = self._dispatch(method, host, raw_path, query, headers, body)
        except S3Error as error:
            answer = self._error_answer(error, method, request_id)
        except Exception as bug:  # a stand-in bug: say so, rather than drop the connection
            failure = S3Error(500, "InternalError", f"S3 stand-in failure: {bug!r}")
            answer = self._error_answer(failure, method, request_id)
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

    def _error_answer(self, error: S3Error, method: str, request_id: str) -> _Answer:
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
            body = _error_xml(children)
            headers["Content-Type"] = "application/xml"
        return _Answer(error.status, headers, body, length=0, error=error.code)

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
        names = {name for name, _ in query}
        operation = self._operation(method, where.key, names, dict(query))
        in_region = {"x-amz-bucket-region": bucket.region}
        if where.regional and where.region != bucket.region:
            raise S3Error(
                301,
                "PermanentRedirect",
                "The bucket you are attempting to access must be addressed using the specified"
                " endpoint. Please send all future requests to this endpoint.",
                {"Endpoint": _endpoint_of(bucket), "Bucket": bucket.name},
                in_region,
            )
        # GetBucketLocation is how clients learn a region: S3 answers it for any
        # bucket when signed for us-east-1 at the global endpoint.
        also = {"us-east-1"} if operation == "GetBucketLocation" and not where.regional else set()
        access_key = self._authenticate(method, host, raw_path, query, headers, body, bucket, also)
        if access_key is None and not (
            bucket.public
            and operation in ("GetObject", "HeadObject", "ListObjectsV2", "HeadBucket")
        ):
            raise S3Error(
                403,
                "AccessDenied",
                "Access Denied",
                headers=self._head_region(method, where, bucket),
            )
        if operation in ("GetObject", "HeadObject"):
            return self._get_object(bucket, where.key, headers, method)
        if operation == "ListObjectsV2":
            return self._list_objects_v2(bucket, dict(query))
        if operation == "HeadBucket":
            return _Answer(200, {**in_region, "x-amz-access-point-alias": "false"})
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

    @staticmethod
    def _head_region(method: str, where: _Target, bucket: _Bucket) -> dict[str, str]:
        """HeadBucket answers carry the bucket's region whatever their status."""
        if method == "HEAD" and not where.key:
            return {"x-amz-bucket-region": bucket.region}
        return {}

    @staticmethod
    def _operation(method: str, key: str, names: set[str], query: dict[str, str]) -> str:
        if method not in ("GET", "HEAD"):
            return "Unsupported"
        if names & _UNSUPPORTED_SUBRESOURCES:
            raise S3Error(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
            )
        if key:
            return "GetObject" if method == "GET" else "HeadObject"
        if method == "HEAD":
            return "HeadBucket"
        if "location" in names:
            return "GetBucketLocation"
        if query.get("list-type") == "2":
            return "ListObjectsV2"
        raise S3Error(
            501,
            "NotImplemented",
            "The stand-in serves ListObjectsV2 (list-type=2) only, not this bucket request.",
        )

    # ---- authentication

    def _authenticate(
        self,
        method: str,
        host: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Message,
        body: bytes,
        bucket: _Bucket,
        also_accepted: set[str],
    ) -> str | None:
        """The access key of a correctly signed request, None for an anonymous one;
        any other request raises S3's error for it. The checks run in S3's order:
        form, region, key, token, credential expiry, time, signature."""
        authorization = headers.get("Authorization")
        names = {name for name, _ in query}
        presigned = bool(names & {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"})
        if authorization and presigned:
            raise S3Error(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter,"
                " Signature query string parameter or the Authorization header should be"
                " specified",
            )
        if authorization:
            signature = self._from_header(authorization, headers)
        elif presigned:
            signature = self._from_query(dict(query))
        elif {"AWSAccessKeyId", "Signature"} & names:
            raise S3Error(
                400,
                "InvalidRequest",
                "The authorization mechanism you have provided is not supported."
                " Please use AWS4-HMAC-SHA256.",
            )
        else:
            return None
        code = (
            "AuthorizationQueryParametersError"
            if signature.presigned
            else ("AuthorizationHeaderMalformed")
        )
        lead = (
            "Error parsing the X-Amz-Credential parameter; "
            if signature.presigned
            else "The authorization header is malformed; "
        )
        if signature.region != bucket.region and signature.region not in also_accepted:
            raise S3Error(
                400,
                code,
                f"{lead}the region '{signature.region}' is wrong; expecting '{bucket.region}'",
                {"Region": bucket.region},
                {"x-amz-bucket-region": bucket.region},
            )
        if signature.service != "s3":
            raise S3Error(
                400,
                code,
                f"{lead}incorrect service '{signature.service}'. This endpoint belongs to 's3'.",
            )
        signed_at = _sigv4_time(signature.timestamp)
        if signed_at is None:
            if signature.presigned:
                raise S3Error(
                    400,
                    code,
                    "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
                )
            raise S3Error(
                403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
            )
        if signature.date != signature.timestamp[:8]:
            raise S3Error(
                400, code, f"{lead}Invalid credential date. Date is not the same as X-Amz-Date."
            )

        with self._lock:
            known = self._keys.get(signature.access_key)
        if known is None:
            raise S3Error(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                {"AWSAccessKeyId": signature.access_key},
            )
        token_fields = {"Token-0": signature.token} if signature.token else {}
        if signature.token != known.token:
            raise S3Error(
                403,
                "InvalidToken",
                "The provided token is malformed or otherwise invalid.",
                token_fields,
            )
        now = self.now()
        if known.expires_at is not None and now >= known.expires_at:
            raise S3Error(400, "ExpiredToken", "The provided token has expired.", token_fields)

        if signature.presigned:
            if signed_at > now + MAX_SKEW:
                raise S3Error(
                    403,
                    "AccessDenied",
                    "Request is not yet valid",
                    {"X-Amz-Date": signature.timestamp, "ServerTime": _iso(now)},
                )
            if now > signed_at + signature.expires:
                raise S3Error(
                    403,
                    "AccessDenied",
                    "Request has expired",
                    {
                        "X-Amz-Expires": str(signature.expires),
                        "Expires": _iso(signed_at + signature.expires),
                        "ServerTime": _iso(now),
                    },
                )
        elif abs(signed_at - now) > MAX_SKEW:
            raise S3Error(
                403,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                {
                    "RequestTime": signature.timestamp,
                    "ServerTime": _iso(now),
                    "MaxAllowedSkewMilliseconds": str(MAX_SKEW * 1000),
                },
            )
        if not signature.presigned:
            self._check_payload_hash(headers, body)

        canonical, to_sign, expected = self._expected_signature(
            signature, known.secret, method, host, raw_path, query, headers
        )
        if not hmac.compare_digest(expected, signature.signature):
            raise S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you"
                " provided. Check your key and signing method.",
                {
                    "AWSAccessKeyId": signature.access_key,
                    "StringToSign": to_sign,
                    "SignatureProvided": signature.signature,
                    "CanonicalRequest": canonical,
                },
            )
        return signature.access_key

    @staticmethod
    def _from_header(authorization: str, headers: Message) -> _Signature:
        malformed = "AuthorizationHeaderMalformed"
        lead = "The authorization header is malformed; "
        if not authorization.startswith(_ALGORITHM + " "):
            if authorization.startswith("AWS "):
                raise S3Error(
                    400,
                    "InvalidRequest",
                    "The authorization mechanism you have provided is not supported."
                    " Please use AWS4-HMAC-SHA256.",
                )
            raise S3Error(400, malformed, f"{lead}the authorization mechanism is not supported.")
        parts: dict[str, str] = {}
        for piece in authorization[len(_ALGORITHM) + 1 :].split(","):
            name, _, value = piece.strip().partition("=")
            parts[name] = value
        if not {"Credential", "SignedHeaders", "Signature"} <= parts.keys():
            raise S3Error(
                400,
                malformed,
                f"{lead}the authorization header requires three components:"
                " Credential, SignedHeaders, and Signature.",
            )
        scope = parts["Credential"].split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            raise S3Error(400, malformed, lead + _MALFORMED_CREDENTIAL)
        timestamp = headers.get("X-Amz-Date")
        if timestamp is None and headers.get("Date"):
            try:
                moment = parsedate_to_datetime(headers["Date"])
                timestamp = moment.astimezone(dt.UTC).strftime(SIGV4_TIMESTAMP)
            except (TypeError, ValueError):
                timestamp = ""
        if "x-amz-content-sha256" not in {h.lower() for h in headers}:
            raise S3Error(
                400,
                "InvalidRequest",
                "Missing required header for this request: x-amz-content-sha256",
            )
        return _Signature(
            presigned=False,
            access_key=scope[0],
            date=scope[1],
            region=scope[2],
            service=scope[3],
            signed_headers=tuple(parts["SignedHeaders"].split(";")),
            signature=parts["Signature"],
            timestamp=timestamp or "",
            token=headers.get("x-amz-security-token"),
        )

    @staticmethod
    def _from_query(params: dict[str, str]) -> _Signature:
        code = "AuthorizationQueryParametersError"
        required = (
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Signature",
            "X-Amz-Date",
            "X-Amz-SignedHeaders",
            "X-Amz-Expires",
        )
        if not all(name in params for name in required):
            raise S3Error(
                400,
                code,
                "Query-string authentication version 4 requires the X-Amz-Algorithm,"
                " X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders,"
                " and X-Amz-Expires parameters.",
            )
        if params["X-Amz-Algorithm"] != _ALGORITHM:
            raise S3Error(400, code, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
        scope = params["X-Amz-Credential"].split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            raise S3Error(
                400, code, "Error parsing the X-Amz-Credential parameter; " + _MALFORMED_CREDENTIAL
            )
        try:
            expires = int(params["X-Amz-Expires"])
        except ValueError:
            expires = -1
        if expires < 0:
            raise S3Error(400, code, "X-Amz-Expires should be a number")
        if expires > MAX_PRESIGN_EXPIRES:
            raise S3Error(
                400, code, "X-Amz-Expires must be less than a week (in seconds) that is 604800"
            )
        return _Signature(
            presigned=True,
            access_key=scope[0],
            date=scope[1],
            region=scope[2],
            service=scope[3],
            signed_headers=tuple(params["X-Amz-SignedHeaders"].split(";")),
            signature=params["X-Amz-Signature"],
            timestamp=params["X-Amz-Date"],
            token=params.get("X-Amz-Security-Token"),
            expires=expires,
        )

    @staticmethod
    def _check_payload_hash(headers: Message, body: bytes) -> None:
        claimed = headers["x-amz-content-sha256"]
        if claimed == "UNSIGNED-PAYLOAD" or claimed.startswith("STREAMING-"):
            return
        if not re.fullmatch(r"[0-9a-f]{64}", claimed):
            raise S3Error(
                400,
                "InvalidArgument",
                "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-"
                "TRAILER or a valid sha256 value.",
            )
        if hashlib.sha256(body).hexdigest() != claimed:
            raise S3Error(
                400,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )

    @staticmethod
    def _expected_signature(
        signature: _Signature,
        secret: str,
        method: str,
        host: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Message,
    ) -> tuple[str, str, str]:
        """(canonical request, string to sign, signature) as botocore computes them
        for what this request carries, judged as S3 judges it: the path exactly as
        sent (S3 does not normalise it, so a client whose HTTP library re-escapes the
        path after signing, as yarl does to "%28", fails here as it fails on S3),
        the query re-encoded from its decoded names and values."""
        credentials = Credentials(signature.access_key, secret, signature.token)
        signer: S3SigV4Auth
        if signature.presigned:
            signer = _QuerySigner(
                credentials, signature.service, signature.region, signature.expires
            )
            params = [(name, value) for name, value in query if name != "X-Amz-Signature"]
        else:
            signer = _HeaderSigner(credentials, signature.service, signature.region)
            params = list(query)
        url = "https://" + host + raw_path
        request = AWSRequest(method=method, url=url, params=params)
        for name in signature.signed_headers:
            for value in headers.get_all(name) or []:
                request.headers[name] = value
        request.context["timestamp"] = signature.timestamp
        request.context["signed_headers"] = signature.signed_headers
        canonical = signer.canonical_request(request)
        if not signature.presigned and "x-amz-content-sha256" not in signature.signed_headers:
            # botocore takes the payload hash from the header only when it is signed.
            canonical = canonical.rsplit("\n", 1)[0] + "\n" + headers["x-amz-content-sha256"]
        to_sign = signer.string_to_sign(request, canonical)
        return canonical, to_sign, signer.signature(to_sign, request)

    # ---- operations

    def _get_object(self, bucket: _Bucket, key: str, headers: Message, method: str) -> _Answer:
        with self._lock:
            found = bucket.objects.get(key)
            if method == "GET" and self._throttled > 0:
                self._throttled -= 1
                slow = {} if self._retry_after is None else {"Retry-After": str(self._retry_after)}
                raise S3Error(503, "SlowDown", "Please reduce your request rate.", headers=slow)
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

    def _list_objects_v2(self, bucket: _Bucket, query: dict[str, str]) -> _Answer:
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
        with self._lock:
            objects = dict(bucket.objects)
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

        children: list[tuple[str, str]] = [("Name", bucket.name), ("Prefix", encode(prefix))]
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
        parts = [_xml_children(children)]
        for key in contents:
            item = objects[key]
            parts.append(
                "<Contents>"
                + _xml_children(
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
            parts.append(
                f"<CommonPrefixes><Prefix>{escape(encode(common))}</Prefix></CommonPrefixes>"
            )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<ListBucketResult xmlns="{_NAMESPACE}">{"".join(parts)}</ListBucketResult>'
        ).encode()
        return _Answer(200, {"Content-Type": "application/xml"}, body)


def _xml_children(children: Iterable[tuple[str, str]]) -> str:
    return "".join(f"<{tag}>{escape(value)}</{tag}>" for tag, value in children)


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


class _TLSServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer whose connections are TLS, handshaken in the connection's
    own thread (a wrapped listening socket would handshake in the accept loop, so
    one slow client would stall every other)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 512  # a hundred clients connecting at once must not see SYN drops

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[http.server.BaseHTTPRequestHandler],
        context: ssl.SSLContext,
        standin: S3StandIn,
    ) -> None:
        self.context = context
        self.standin = standin
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's FQDN; not needed, maybe slow.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(60)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # e.g. a client that does not trust the test CA
        with self._open_lock:
            self._open.add(tls)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            with self._open_lock:
                self._open.discard(tls)
            tls.close()

    def close_connections(self) -> None:
        """End idle keep-alive connections, so clients don't keep a dead server's."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-answer is expected in tests, not news."""


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


# --------------------------------------------------------------------------- CONNECT proxy


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
        self._server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler, self)
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ConnectProxy:
        threading.Thread(target=self._server.serve_forever, args=(_POLL,), daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.close_tunnels()
        self._server.server_close()

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


class _ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 512

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[http.server.BaseHTTPRequestHandler],
        proxy: ConnectProxy,
    ) -> None:
        self.proxy = proxy
        self._tunnels: set[socket.socket] = set()
        self._tunnels_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, *sockets: socket.socket, add: bool = True) -> None:
        with self._tunnels_lock:
            for sock in sockets:
                if add:
                    self._tunnels.add(sock)
                else:
                    self._tunnels.discard(sock)

    def close_tunnels(self) -> None:
        with self._tunnels_lock:
            sockets = list(self._tunnels)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up on a tunnel are routine."""


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
        self.server.track(client, upstream)
        back = threading.Thread(target=_relay, args=(upstream, client), daemon=True)
        back.start()
        try:
            _relay(client, upstream)
            back.join()
        finally:
            self.server.track(client, upstream, add=False)
            upstream.close()

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
