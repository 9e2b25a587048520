"""Errors that stop a sync before anything is written.

Every one of them carries a single line naming what went wrong and where, so the
CLI can print it as is and exit with status 2. Failures of individual transfers
are not exceptions of this kind: they are collected and reported per file.
"""


class SyncError(Exception):
    """A usage, configuration or source problem: the run cannot start or go on."""


class UnsafeNameError(SyncError):
    """A file name from the bucket that could escape the cache or confuse a terminal."""


class FormatError(SyncError):
    """A server_config or mapping that is not what CRDS would write."""


class SourceError(SyncError):
    """The bucket, prefix or object cannot be reached, or access is denied."""


class NotFound(SourceError):
    """The object does not exist (a context or file missing from the bucket)."""


class WholeOnly(SourceError):
    """The source answered a range with the whole file (a server that ignores Range):
    the file is fetched again from its start, in one piece."""


class Transient(SourceError):
    """A failure that may not happen again: throttling, a server error, a lost connection."""


class Unreachable(Transient):
    """The connection was refused, or the host's name does not resolve: passing once
    the source has answered (a server restarting), a configuration mistake before
    that (a typo'd port or host), which the pacer ends the run for."""

    def __init__(self, message: str, endpoint: str = "", cause: str = "") -> None:
        super().__init__(message)
        self.endpoint, self.cause = endpoint, cause


class Mismatch(Transient):
    """The bytes received are not the bytes server_config describes: fetch them again,
    but only a few times (a flipped bit passes; a bucket that disagrees does not)."""

    TRIES = 3


class Resend(Transient):
    """Send the request again at once: the network layer has mended what made it fail
    (learned the bucket's region, renewed expired credentials, found a kept-alive
    connection closed). Counted as a resend, not a try, and not waited for."""


class Throttled(Transient):
    """S3 asked for fewer requests (503 SlowDown): the whole run slows down, not one file."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SetupError(SyncError):
    """This machine's network or credentials setup is wrong (an untrusted certificate, a
    proxy that refuses, a skewed clock): every request would fail the same way, so the
    run stops at once instead of failing each file."""
