"""SigV4 verification for the S3 stand-in: who signed a request, and whether S3 would
accept the signature.

Why: a client that signs one thing and sends another (a re-escaped path, a header
changed after signing, the wrong region or clock) fails on S3, so it must fail here
too. The expected signature is computed with botocore's own signer code, so a
mismatch means the client signed something other than what it sent; the checks run
in S3's order and fail with S3's error codes and messages.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from email.utils import parsedate_to_datetime

from botocore.auth import SIGV4_TIMESTAMP, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from s3_errors import S3Error

__all__ = ["SigV4Check", "claimed_credential"]

MAX_SKEW = 15 * 60
"""S3's tolerance, in seconds, between a request's X-Amz-Date and the server's clock."""

MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
"""The longest X-Amz-Expires S3 accepts: a week."""

_ALGORITHM = "AWS4-HMAC-SHA256"
_MALFORMED_CREDENTIAL = (
    'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
)


@dataclass
class _Key:
    secret: str
    token: str | None
    expires_at: float | None


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


class SigV4Check:
    """The credentials the stand-in accepts, and the check of one request against them.

    `now` is the server's clock (skew included), for credential expiry and every
    time check.
    """

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()

    def add(
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
            self._keys[access_key].expires_at = self._now() - 1

    def authenticate(
        self,
        method: str,
        host: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Message,
        body: bytes,
        region: str,
        also_accepted: set[str],
    ) -> str | None:
        """The access key of a correctly signed request for a bucket in `region` (or a
        region in `also_accepted`), None for an anonymous one; any other request
        raises S3's error for it. The checks run in S3's order: form, region, key,
        token, credential expiry, time, signature."""
        signature = _carried_signature(headers, query)
        if signature is None:
            return None
        signed_at = _check_scope(signature, region, also_accepted)
        known = self._known(signature)
        now = self._now()
        if known.expires_at is not None and now >= known.expires_at:
            raise S3Error(
                400, "ExpiredToken", "The provided token has expired.", _token_fields(signature)
            )
        _check_time(signature, signed_at, now)
        if not signature.presigned:
            _check_payload_hash(headers, body)

        canonical, to_sign, expected = _expected_signature(
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

    def _known(self, signature: _Signature) -> _Key:
        """The credentials a signature names, if its access key and token match them."""
        with self._lock:
            known = self._keys.get(signature.access_key)
        if known is None:
            raise S3Error(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                {"AWSAccessKeyId": signature.access_key},
            )
        if signature.token != known.token:
            raise S3Error(
                403,
                "InvalidToken",
                "The provided token is malformed or otherwise invalid.",
                _token_fields(signature),
            )
        return known


def claimed_credential(
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


def _carried_signature(headers: Message, query: list[tuple[str, str]]) -> _Signature | None:
    """The SigV4 signature a request carries (Authorization header or presigned
    query), None if it carries none; S3's error for any other form."""
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
        return _from_header(authorization, headers)
    if presigned:
        return _from_query(dict(query))
    if {"AWSAccessKeyId", "Signature"} & names:
        raise S3Error(
            400,
            "InvalidRequest",
            "The authorization mechanism you have provided is not supported."
            " Please use AWS4-HMAC-SHA256.",
        )
    return None


def _check_scope(signature: _Signature, region: str, also_accepted: set[str]) -> float:
    """The signing time, once the credential scope (region, service, date) and the
    timestamp's form have passed S3's checks."""
    code = (
        "AuthorizationQueryParametersError"
        if signature.presigned
        else "AuthorizationHeaderMalformed"
    )
    lead = (
        "Error parsing the X-Amz-Credential parameter; "
        if signature.presigned
        else "The authorization header is malformed; "
    )
    if signature.region != region and signature.region not in also_accepted:
        raise S3Error(
            400,
            code,
            f"{lead}the region '{signature.region}' is wrong; expecting '{region}'",
            {"Region": region},
            {"x-amz-bucket-region": region},
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
    return signed_at


def _check_time(signature: _Signature, signed_at: float, now: float) -> None:
    """S3's clock checks: a presigned URL's validity window, else MAX_SKEW."""
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


def _token_fields(signature: _Signature) -> dict[str, str]:
    return {"Token-0": signature.token} if signature.token else {}


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
        signer = _QuerySigner(credentials, signature.service, signature.region, signature.expires)
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


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sigv4_time(stamp: str) -> float | None:
    try:
        return dt.datetime.strptime(stamp, SIGV4_TIMESTAMP).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


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
