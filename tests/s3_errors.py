"""S3's error answers, as the S3 stand-in and its SigV4 check raise and render them.

Why: botocore's retry, redirect and error handling read the status, the headers
(``x-amz-bucket-region``, ``Retry-After``...) and the XML body's Code and fields;
raising `S3Error` wherever a request goes wrong and rendering it the way S3 does
lets botocore react to the stand-in's errors exactly as it reacts to S3's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from xml.sax.saxutils import escape

__all__ = ["S3Error", "error_xml", "xml_children"]


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


def error_xml(children: Iterable[tuple[str, str]]) -> bytes:
    """An S3 ``<Error>`` document with these (tag, text) children."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{xml_children(children)}</Error>'
    ).encode()


def xml_children(children: Iterable[tuple[str, str]]) -> str:
    """(tag, text) pairs as XML elements, the text escaped."""
    return "".join(f"<{tag}>{escape(value)}</{tag}>" for tag, value in children)
