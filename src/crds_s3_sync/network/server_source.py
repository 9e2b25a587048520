"""A CRDS server: its JSON-RPC (`crds_rpc`) and its files, plain HTTP(S) GETs of
`{mapping_url}{name}` and `{reference_url}{name}` as crds's own client fetches them,
all on one aiohttp session of kept-alive connections, at most `connections` of them.

aiohttp rather than obstore (which reads S3's bodies): a busy server's Retry-After
is in a header, which obstore's errors drop, and a redirect from HTTPS to plain HTTP
must be refused, which obstore follows unseen. The user's plain-HTTPS settings hold
(HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE, REQUESTS_CA_BUNDLE; `crds_rpc.Client`).
One attempt per call: the engine's pacer decides on more.
"""

import email.utils
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC
from typing import Any

import aiohttp

from ..errors import FormatError, NotFound, SourceError, Throttled, Transient, WholeOnly
from . import crds_rpc
from .bodies import CHUNK
from .connection import READ_TIMEOUT
from .location import Address

_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)\Z", re.ASCII)
# Bytes as stored: a body gzipped on the way would not have server_config's size
IDENTITY = {"Accept-Encoding": "identity"}


class ServerSource:
    """Reads a CRDS server's files and asks it JSON-RPC calls; use as
    `async with ServerSource(server, connections) as source`."""

    def __init__(self, server: str, connections: int, timeout: float = READ_TIMEOUT) -> None:
        self.server = server
        self._connections = connections
        self._timeout = timeout

    async def __aenter__(self) -> "ServerSource":
        self._client = crds_rpc.Client(self._timeout, self._connections)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.__aexit__(*exc_info)

    async def ask(self, method: str, *params: object) -> Any:
        """`method(*params)` of the server's JSON-RPC, its result decoded."""
        return await crds_rpc.call(self._client, self.server, method, *params)

    async def read(
        self, location: Address, name: str, *, size: int | None = None, limit: int | None = None
    ) -> memoryview:
        where = location.url(name)
        async with self._get(where) as answer:
            announced = answer.content_length
            if size is not None:
                _total(announced, size, where)
            if limit is not None and announced is not None and announced > limit:
                raise FormatError(
                    f"{where}: {announced:,} bytes, more than the {limit >> 20} MiB"
                    " a file of its kind can need"
                )
            data = await _body(answer, where, size if size is not None else limit)
        if size is not None and len(data) != size:
            raise Transient(f"{where}: connection closed after {len(data)} of {size} bytes")
        return memoryview(data)

    async def read_range(
        self, location: Address, name: str, start: int, end: int, total: int
    ) -> memoryview:
        where = location.url(name)
        async with self._get(where, start, end, total) as answer:
            data = await _body(answer, where, end - start)
        if len(data) != end - start:
            raise Transient(f"{where}: connection closed after {len(data)} of {end - start} bytes")
        return memoryview(data)

    async def stream_range(
        self,
        location: Address,
        name: str,
        start: int,
        end: int,
        total: int,
        sink: Callable[[memoryview, int], Awaitable[None]],
    ) -> None:
        where, at = location.url(name), start
        async with self._get(where, start, end, total) as answer:
            buffer = bytearray()
            try:
                async for piece in answer.content.iter_any():
                    buffer += piece
                    if at + len(buffer) > end:
                        raise SourceError(f"{where}: more bytes than the range asked for")
                    if len(buffer) >= CHUNK:
                        await sink(memoryview(buffer), at)
                        at, buffer = at + len(buffer), bytearray()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise crds_rpc.failure(where, exc) from None
            if buffer:
                await sink(memoryview(buffer), at)
                at += len(buffer)
        if at != end:
            raise Transient(f"{where}: connection closed after {at - start} of {end - start}")

    async def size(self, location: Address, name: str) -> int:
        where = location.url(name)
        try:
            via = self._client.via(where)
            head = self._client.session.head(where, allow_redirects=True, headers=IDENTITY, **via)
            async with head as answer:
                _check(answer, where)
                if answer.content_length is None:
                    raise SourceError(f"{where}: the server gave no size (Content-Length)")
                return answer.content_length
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise crds_rpc.failure(where, exc) from None

    async def list_names(self, location: Address) -> list[str]:
        """A CRDS server lists its files in `get_server_info`, not by directory."""
        raise SourceError(f"{location}: a CRDS server lists no directories")

    @asynccontextmanager
    async def _get(
        self, where: str, start: int = 0, end: int | None = None, total: int | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET whose status is checked; of bytes `start` to `end` of a file of
        `total`, if given. A 200 answered to a range is taken where the range is the
        whole file, and otherwise raised as WholeOnly."""
        ranged = end is not None and total is not None
        headers = {**IDENTITY, "Range": f"bytes={start}-{end - 1}"} if ranged else IDENTITY  # type: ignore[operator]
        try:
            get = self._client.session.get(where, headers=headers, **self._client.via(where))
            async with get as answer:
                _check(answer, where)
                if ranged and answer.status == 200:
                    if (start, end) != (0, total):
                        raise WholeOnly(f"{where}: the server answered a range with the whole file")
                    _total(answer.content_length, total, where)
                elif ranged:
                    _answered(answer.headers.get("Content-Range", ""), start, end, total, where)
                yield answer
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise crds_rpc.failure(where, exc) from None


def _check(answer: aiohttp.ClientResponse, where: str) -> None:
    """The server's refusals in the tool's kinds; a redirect to plain HTTP refused."""
    crds_rpc.refused_redirect(answer, where)
    status = answer.status
    if status in (200, 206):
        return
    if status == 404:
        raise NotFound(f"{where}: not on the server (404)")
    if status in (429, 503):
        wait = retry_after(answer.headers.get("Retry-After"))
        raise Throttled(f"{where}: the server is busy ({status})", wait)
    if status >= 500:
        raise Transient(f"{where}: the server answered {status}")
    raise SourceError(f"{where}: the server answered {status}")


async def _body(answer: aiohttp.ClientResponse, where: str, most: int | None) -> bytes:
    """The body, refused past `most` bytes: a server cannot fill memory, nor a part
    spill into the next."""
    try:
        length = answer.content_length
        if most is None or (length is not None and length <= most):
            return await answer.read()  # no more than Content-Length is read
        data = bytearray()
        async for piece in answer.content.iter_any():
            data += piece
            if len(data) > most:
                raise SourceError(f"{where}: more than the {most:,} bytes expected")
        return bytes(data)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise crds_rpc.failure(where, exc) from None


def _answered(header: str, start: int, end: int, total: int, where: str) -> None:
    """A 206 must carry the range asked for, of a file of server_config's size."""
    found = _RANGE.match(header)
    if found is None:
        raise SourceError(f"{where}: a partial answer without a Content-Range")
    _total(int(found[3]), total, where)
    if (int(found[1]), int(found[2])) != (start, end - 1):
        raise SourceError(f"{where}: answered {header!r} to bytes {start}-{end - 1}")


def _total(found: int | None, total: int, where: str) -> None:
    """A file of another size than server_config's: no retry, the server disagrees."""
    if found is not None and found != total:
        raise SourceError(f"{where}: file is {found} bytes, expected {total}")


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds to wait: a number of seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are in UTC
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())
