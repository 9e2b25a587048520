"""Big object bodies, copied from the socket into the file by worker threads.

On the event loop every received chunk was copied twice in user space (uvloop's
bytes, then aiohttp's payload) before our write, and the loop's one core was the
bottleneck of the 2 GiB benchmark at about half of s5cmd's speed. Here each
worker thread owns a blocking `http.client` connection and reads with `readinto`
straight into a reused buffer, which `pwritev` and SHA-1 then take; all three
release the GIL, so the kernel's copies and the hashing spread over every core.
Small objects stay on aiohttp, where many requests in flight matter more than
copies.
"""

import contextlib
import hashlib
import http.client
import os
import queue
import socket
import ssl
import threading
from collections.abc import Callable
from functools import partial
from typing import NamedTuple
from urllib.parse import urlsplit

import anyio

from .errors import SourceError, Transient

THREADS = 16  # bodies in flight at once; more only adds GIL traffic
BUFFER = 1 << 20  # bytes read (then written and hashed) per call
ERROR_BODY = 4096  # enough of an S3 error answer to find its <Code>

Refusal = Callable[[int, bytes, str], SourceError]


class Request(NamedTuple):
    """A signed GET: its URL, its headers, and the s3:// address errors name."""

    url: str
    headers: dict[str, str]
    where: str


class BulkReader:
    """Keep-alive connections shared by the worker threads, one request each at a time."""

    def __init__(self, threads: int, timeout: float, refusal: Refusal) -> None:
        self.limiter = anyio.CapacityLimiter(threads)
        self._timeout = timeout
        self._refusal = refusal  # an S3 error answer as a SourceError
        self._idle: dict[tuple[str, str], queue.SimpleQueue] = {}
        self._ssl: ssl.SSLContext | None = None
        self._local = threading.local()  # each thread's buffer, reused for every body

    async def copy(
        self,
        request: "Request",
        fd: int,
        offset: int,
        length: int,
        digest: "hashlib._Hash | None" = None,
    ) -> None:
        """GET the request's URL and write its body, which must be `length` bytes, to
        `fd` at `offset`.

        A cancelled caller (Ctrl-C, or another failure ending the sync) does not
        wait for the thread: its socket is shut down so a blocked read returns at
        once, and it writes through its own duplicate of `fd`, so the caller may
        close `fd` without the number being reused under the thread.
        """
        job = _Job()
        copy = partial(self._copy, request, os.dup(fd), offset, length, digest, job)
        try:
            await anyio.to_thread.run_sync(copy, abandon_on_cancel=True, limiter=self.limiter)
        except anyio.get_cancelled_exc_class():
            job.abandon()
            raise

    def _copy(
        self,
        request: "Request",
        fd: int,
        offset: int,
        length: int,
        digest: "hashlib._Hash | None",
        job: "_Job",
    ) -> None:
        url, headers, where = request
        parts = urlsplit(url)
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        place = (parts.scheme, parts.netloc)
        connection = job.connection = self._connection(*place)
        reusable = False
        try:
            try:
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                if response.status not in (200, 206) or (
                    "Range" in headers and response.status != 206
                ):
                    raise self._refusal(response.status, response.read(ERROR_BODY), where)
                announced = int(response.getheader("Content-Length", "-1"))
            except (OSError, http.client.HTTPException) as exc:
                raise _lost(where, exc) from None
            if announced != length:  # the bucket disagrees with server_config: no retry
                raise SourceError(f"{where}: object is {announced} bytes, expected {length}")
            buffer = getattr(self._local, "buffer", None)
            if buffer is None:
                buffer = self._local.buffer = memoryview(bytearray(BUFFER))
            done = 0
            while done < length and not job.abandoned:
                try:
                    got = response.readinto(buffer[: min(len(buffer), length - done)])
                except (OSError, http.client.HTTPException) as exc:
                    raise _lost(where, exc) from None
                if not got:
                    raise Transient(f"{where}: connection closed after {done} of {length} bytes")
                if digest is not None:
                    digest.update(buffer[:got])
                _write_all(fd, offset + done, buffer[:got])
                done += got
            reusable = done == length and not response.will_close and not job.abandoned
        finally:
            os.close(fd)
            if reusable:
                self._idle[place].put(connection)
            else:
                connection.close()

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        idle = self._idle.setdefault((scheme, netloc), queue.SimpleQueue())
        try:
            return idle.get_nowait()
        except queue.Empty:
            pass
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            return http.client.HTTPSConnection(netloc, timeout=self._timeout, context=self._ssl)
        return http.client.HTTPConnection(netloc, timeout=self._timeout)

    def close(self) -> None:
        for idle in self._idle.values():
            while not idle.empty():
                idle.get_nowait().close()


class _Job:
    """What the event loop may need to stop one thread's copy."""

    def __init__(self) -> None:
        self.abandoned = False
        self.connection: http.client.HTTPConnection | None = None

    def abandon(self) -> None:
        self.abandoned = True
        sock = self.connection.sock if self.connection else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _lost(where: str, exc: BaseException) -> Transient:
    detail = " ".join(str(exc).split()) or "no detail"
    return Transient(f"{where}: {type(exc).__name__}: {detail}")


def _write_all(fd: int, offset: int, data: memoryview) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        offset += written
        data = data[written:]
