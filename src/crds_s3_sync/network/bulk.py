"""Big object bodies, copied from the socket into the file by worker threads.

On the event loop every received chunk was copied twice in user space (uvloop's
bytes, then aiohttp's payload) before our write, and the loop's one core was the
bottleneck of the 2 GiB benchmark at about half of s5cmd's speed. Here each
worker thread owns a blocking `http.client` connection and reads with `readinto`
straight into a reused buffer, which `pwrite` and SHA-1 then take; all three
release the GIL, so the kernel's copies and the hashing spread over every core.
Small objects stay on aiohttp, where many requests in flight matter more than
copies. Connections go where botocore's would (`connection`): the same CA
bundle, and a CONNECT tunnel through the proxy botocore chose.
"""

import contextlib
import hashlib
import http.client
import os
import queue
import socket
import threading
from collections.abc import AsyncIterator
from functools import partial
from urllib.parse import urlsplit

import anyio

from ..errors import SourceError, Transient
from .connection import Proxy, Request, Trust
from .s3errors import (
    ERROR_BODY,
    PROXY_REFUSALS,
    Answer,
    Translator,
    is_certificate_error,
    one_line,
)

THREADS = 16  # bodies in flight at once; more only adds GIL traffic
BUFFER = 1 << 20  # bytes read (then written and hashed) per call
# What a keep-alive connection the server closed while idle looks like on reuse.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


Place = tuple[str, str, "Proxy | None"]  # scheme, host:port, proxy


class BulkReader:
    """Keep-alive connections shared by the worker threads, one request each at a time."""

    def __init__(self, threads: int, timeout: float, trust: Trust, translator: Translator) -> None:
        self._threads = anyio.CapacityLimiter(threads)
        # anyio's threads are taken through `worker`, before signing; running the copy
        # must then not wait on a second limit (the default one has 40 tokens).
        self._held = anyio.CapacityLimiter(threads)
        self._timeout = timeout
        self._ssl = trust.ssl
        self._translator = translator
        self._idle: dict[Place, queue.SimpleQueue] = {}
        self._local = threading.local()  # each thread's buffer, reused for every body

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        """Hold a worker thread: a GET is signed only once it has one, so a request
        that waited in line is not sent with a signature that aged meanwhile."""
        async with self._threads:
            yield

    async def copy(
        self,
        request: Request,
        fd: int,
        offset: int,
        length: int,
        digest: "hashlib._Hash | None" = None,
        into: memoryview | None = None,
    ) -> None:
        """GET the request's URL and write its body, which must be `length` bytes, to
        `fd` at `offset`; call inside `worker()`. With `into` (`length` bytes), the
        body is also left there, for the caller to hash later from memory.

        A cancelled caller (Ctrl-C, or another failure ending the sync) does not
        wait for the thread: its socket is shut down so a blocked read returns at
        once, and it writes through its own duplicate of `fd`, so the caller may
        close `fd` without the number being reused under the thread.
        """
        job = _Job(os.dup(fd))
        copy = partial(self._copy, request, offset, length, digest, into, job)
        try:
            await anyio.to_thread.run_sync(copy, abandon_on_cancel=True, limiter=self._held)
        except anyio.get_cancelled_exc_class():
            job.abandon()
            raise

    def _copy(
        self,
        request: Request,
        offset: int,
        length: int,
        digest: "hashlib._Hash | None",
        into: memoryview | None,
        job: "_Job",
    ) -> None:
        if not job.begin():
            return  # abandoned before the thread got to it
        fd, parts = job.fd, urlsplit(request.url)
        place = (parts.scheme, parts.netloc, request.proxy)
        reusable = False
        try:
            response = self._send(request, place, job)
            announced = int(response.getheader("Content-Length", "-1"))
            if announced != length:  # the bucket disagrees with server_config: no retry
                raise SourceError(
                    f"{request.where}: object is {announced} bytes, expected {length}"
                )
            buffer = into if into is not None else getattr(self._local, "buffer", None)
            if buffer is None:
                buffer = self._local.buffer = memoryview(bytearray(BUFFER))
            done = 0
            while done < length and not job.abandoned:
                start = done if into is not None else 0
                chunk = buffer[start : start + min(BUFFER, length - done)]
                try:
                    got = response.readinto(chunk)
                except (OSError, http.client.HTTPException) as exc:
                    raise Transient(
                        f"{request.where}: {type(exc).__name__}: {one_line(exc)}"
                    ) from None
                if not got:
                    raise Transient(
                        f"{request.where}: connection closed after {done} of {length} bytes"
                    )
                if digest is not None:
                    digest.update(chunk[:got])
                _write_all(fd, offset + done, chunk[:got])
                done += got
            reusable = done == length and not response.will_close and not job.abandoned
        finally:
            os.close(fd)
            if job.connection is not None:
                if reusable:
                    self._idle[place].put(job.connection)
                else:
                    job.connection.close()

    def _send(self, request: Request, place: Place, job: "_Job") -> http.client.HTTPResponse:
        """Send and read the status; a keep-alive connection that S3 closed while it was
        idle gets one fresh resend, not counted as a try."""
        connection, reused = self._connection_for(place)
        job.connection = connection
        parts = urlsplit(request.url)
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        headers = dict(request.headers)
        proxy = place[2]
        if proxy is not None and parts.scheme == "http":  # forwarded, not tunnelled
            target = request.url
            headers.update(proxy.headers)
        try:
            try:
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
            except _STALE:
                if not reused or job.abandoned:
                    raise
                connection.close()
                connection = job.connection = self._connect(place)
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise self._lost(request, place, exc) from None
        if response.status not in (200, 206) or ("Range" in headers and response.status != 206):
            body = response.read(ERROR_BODY)
            answer = Answer.parse(response.status, dict(response.getheaders()), body)
            raise self._translator.answer(request.where, answer)
        return response

    def _lost(self, request: Request, place: Place, exc: BaseException) -> Exception:
        host, proxy = place[1], place[2]
        if is_certificate_error(exc):
            return self._translator.certificate(host, exc)
        detail = str(exc).removeprefix("Tunnel connection failed:").strip()
        status = detail.split(" ", 1)[0]
        if proxy and detail != str(exc) and status.isdigit() and int(status) in PROXY_REFUSALS:
            return self._translator.proxy_refused(proxy.url, host, detail)
        return Transient(f"{request.where}: {type(exc).__name__}: {one_line(exc)}")

    def _connection_for(self, place: Place) -> tuple[http.client.HTTPConnection, bool]:
        idle = self._idle.setdefault(place, queue.SimpleQueue())
        try:
            return idle.get_nowait(), True
        except queue.Empty:
            return self._connect(place), False

    def _connect(self, place: Place) -> http.client.HTTPConnection:
        scheme, netloc, proxy = place
        host, port = netloc, None
        if proxy is not None:  # connect to the proxy, then CONNECT through it for TLS
            host, port = proxy.host_port
        if scheme != "https":
            return http.client.HTTPConnection(host, port, timeout=self._timeout)
        connection = http.client.HTTPSConnection(
            host, port, timeout=self._timeout, context=self._ssl
        )
        if proxy is not None:
            target = urlsplit(f"//{netloc}")
            connection.set_tunnel(target.hostname or "", target.port or 443, proxy.headers)
        return connection

    def close(self) -> None:
        for idle in self._idle.values():
            while not idle.empty():
                idle.get_nowait().close()


class _Job:
    """What the event loop may need to stop one thread's copy, and the duplicate
    file descriptor the copy writes through: closed by the thread once it has
    begun, or by `abandon` if it never will."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.abandoned = self._begun = False
        self.connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def begin(self) -> bool:
        """In the thread: take charge of `fd`, unless the job was abandoned first."""
        with self._lock:
            self._begun = not self.abandoned
            return self._begun

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True
            if not self._begun:
                os.close(self.fd)
                return
        sock = self.connection.sock if self.connection else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _write_all(fd: int, offset: int, data: memoryview) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        offset += written
        data = data[written:]
