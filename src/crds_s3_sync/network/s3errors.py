"""S3's answers and the network's failures, each as one line: where, S3's words, what to do.

Every request the tool sends, through botocore or its own GET paths, ends here
when it fails, so one failure reads the same whichever client met it. A few
answers are not failures of the file but of the route (a bucket in another
region) or of the moment (credentials that expired in flight): they come out as
`WrongRegion` and `ExpiredCredentials`, which `source` handles by resending.
Text that leaves this module has passed `redact`: a signed URL, a session token
or a proxy password never reaches a terminal, a log or a JSON event.
"""

import contextlib
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import parsedate_to_datetime

from ..errors import NotFound, SetupError, SourceError, Throttled, Transient

# How far this machine's clock may be from S3's before it is named as the cause.
SKEW_TOLERANCE = 300.0
_TRANSIENT_CODES = frozenset({"RequestTimeout", "InternalError", "ServiceUnavailable"})
_THROTTLING_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"}
)
_REGION_CODES = frozenset(
    {
        "PermanentRedirect",
        "TemporaryRedirect",
        "AuthorizationHeaderMalformed",
        "AuthorizationQueryParametersError",
    }
)
_EXPIRED_CODES = frozenset({"ExpiredToken", "TokenRefreshRequired", "RequestExpired"})

_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s'\"<>]*", re.IGNORECASE)
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s'\"<>]+@", re.IGNORECASE)
_SIGNATURE = re.compile(
    r"((?:X-Amz-)?(?:Signature|Credential|Security-Token)=)[^&\s,'\"<>]+", re.IGNORECASE
)


def redact(text: str) -> str:
    """`text` with query strings, URL credentials and signature fields cut out."""
    text = _QUERY.sub(r"\1?…", text)
    text = _USERINFO.sub(r"\1…@", text)
    return _SIGNATURE.sub(r"\1…", text)


def one_line(exc: BaseException) -> str:
    """An exception's text on one line, redacted; the only way such text leaves."""
    return redact(" ".join(str(exc).split()) or type(exc).__name__)


class WrongRegion(SourceError):
    """The bucket lives in `region` (None: S3 did not say, so ask): resend there,
    signed for there."""

    def __init__(self, message: str, region: str | None) -> None:
        super().__init__(message)
        self.region = region


class ExpiredCredentials(SourceError):
    """The signature or session token expired on the way: sign again with fresh ones."""


@dataclass(frozen=True)
class Answer:
    """What an S3 error answer says: status, its XML `Code` and `Message`, and the
    headers that matter (`x-amz-bucket-region`, `Retry-After`, `Date`)."""

    status: int
    code: str
    message: str
    region: str | None = None
    retry_after: float | None = None
    server_time: float | None = None  # S3's clock, from its Date header

    @classmethod
    def parse(cls, status: int, headers: Mapping[str, str], body: bytes) -> "Answer":
        """From an answer's raw XML body."""

        def field(name: bytes) -> str | None:
            match = re.search(rb"<%s>([^<]{1,512})</%s>" % (name, name), body)
            return match.group(1).decode(errors="replace") if match else None

        answer = cls.of(status, headers, field(b"Code"), field(b"Message"), field(b"Region"))
        server_time = field(b"ServerTime")  # RequestTimeTooSkewed says S3's clock here too
        if answer.server_time is None and server_time is not None:
            with contextlib.suppress(ValueError):
                moment = datetime.fromisoformat(server_time.replace("Z", "+00:00"))
                answer = replace(answer, server_time=moment.timestamp())
        return answer

    @classmethod
    def of(
        cls,
        status: int,
        headers: Mapping[str, str],
        code: str | None,
        message: str | None,
        region: str | None = None,
    ) -> "Answer":
        """From fields already parsed (botocore's `ClientError`)."""
        lower = {k.lower(): v for k, v in headers.items()}
        retry_after = None
        if lower.get("retry-after", "").strip().isdigit():
            retry_after = float(lower["retry-after"])
        server_time = None
        if "date" in lower:
            with contextlib.suppress(TypeError, ValueError):
                server_time = parsedate_to_datetime(lower["date"]).timestamp()
        return cls(
            status,
            code or _HTTP_CODES.get(status, f"HTTP{status}"),
            message or "",
            lower.get("x-amz-bucket-region") or region,
            retry_after,
            server_time,
        )


_HTTP_CODES = {
    301: "PermanentRedirect",
    307: "TemporaryRedirect",
    400: "BadRequest",
    403: "AccessDenied",
    404: "NotFound",
}


@dataclass(frozen=True)
class Translator:
    """Knows what the run was set up with, so each line can say what to do about it."""

    signed: bool
    credentials_found: bool
    ca_bundle: str | None  # the CA bundle file in use for TLS

    def answer(self, where: str, answer: Answer) -> SourceError:
        """An S3 error answer as the exception that says what to do about it."""
        code, status = answer.code, answer.status
        said = f"{code}: {answer.message}" if answer.message else code
        skew = _skew(answer.server_time)
        if code == "RequestTimeTooSkewed" or (
            self.signed and skew is not None and status in (400, 403) and abs(skew) > SKEW_TOLERANCE
        ):
            off = "too far off"
            if skew is not None:
                off = f"{abs(skew):.0f} s {'behind' if skew > 0 else 'ahead'}"
            return SetupError(
                f"{where}: {said} (this machine's clock is {off} of S3's: "
                "set it right, e.g. with NTP, and run again)"
            )
        if code in _REGION_CODES:
            return WrongRegion(f"{where}: {said}", answer.region)
        if code in _EXPIRED_CODES or (status == 403 and "expired" in answer.message.lower()):
            return ExpiredCredentials(
                f"{where}: {said} (the credentials expired: renew them, e.g. aws sso login,"
                " and run again)"
            )
        if code == "NoSuchBucket":
            return SourceError(f"{where}: no such bucket ({said}); check --bucket and the preset")
        if code in ("NoSuchKey", "NotFound") or status == 404:
            return NotFound(f"{where}: no such object ({said})")
        if code in _THROTTLING_CODES or status == 503:
            return Throttled(f"{where}: {said}", answer.retry_after)
        if code in _TRANSIENT_CODES or status >= 500:
            return Transient(f"{where}: {said}")
        if code == "InvalidAccessKeyId":
            return SourceError(
                f"{where}: {said} (S3 does not know this access key: check AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID, or try --no-sign-request for a public bucket)"
            )
        if code == "SignatureDoesNotMatch":
            return SourceError(f"{where}: {said} (check the secret key of the credentials in use)")
        if code == "InvalidToken":
            return SourceError(f"{where}: {said} (the session token is not valid: renew it)")
        if status == 403:
            return SourceError(f"{where}: access denied ({said}){self._access_hint()}")
        return SourceError(f"{where}: {said}")

    def _access_hint(self) -> str:
        if not self.signed and not self.credentials_found:
            return (
                "; no AWS credentials were found, so the request was anonymous:"
                " set AWS_PROFILE or credentials for a private bucket"
            )
        if not self.signed:
            return "; the request was anonymous (--no-sign-request): drop it for a private bucket"
        return (
            "; the credentials in use may not read this: check them, or try"
            " --no-sign-request if the bucket is public"
        )

    def certificate(self, host: str, exc: BaseException) -> SetupError:
        bundle = self.ca_bundle or "the system's default"
        return SetupError(
            f"{host}: TLS certificate not trusted ({_reason(exc)}); CA bundle in use: {bundle}."
            " Point AWS_CA_BUNDLE (or ca_bundle in the AWS config) at the CA that signed it,"
            " e.g. a TLS-inspecting proxy's"
        )

    def proxy_refused(self, proxy: str, host: str, detail: str) -> SetupError:
        return SetupError(
            f"proxy {redact(proxy)} refused the tunnel to {host}: {detail}"
            " (check HTTPS_PROXY, NO_PROXY and the proxy's credentials)"
        )


def is_certificate_error(exc: BaseException | None) -> bool:
    """A failed certificate check met by botocore's client (aiohttp wraps it)."""
    exc = getattr(exc, "certificate_error", exc)
    return isinstance(exc, ssl.SSLCertVerificationError) or (
        isinstance(exc, ssl.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)
    )


def _reason(exc: BaseException) -> str:
    exc = getattr(exc, "certificate_error", exc)
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return exc.verify_message
    return one_line(exc)


def _skew(server_time: float | None) -> float | None:
    """Seconds this machine's clock is behind S3's (negative: ahead)."""
    return None if server_time is None else server_time - time.time()
