"""Small object bodies, read whole into memory by aiohttp on the event loop.

Most CRDS files are a few kilobytes: for them many requests in flight matter
more than copies, and a thread hand-off would cost more than the read (`bulk`
takes the big ones). aiohttp is aiobotocore's own transport; here it gets
botocore's CA bundle and, with each request, botocore's proxy (`connection`),
and keeps its own reading of the environment out (`trust_env` stays off).
"""

import aiohttp

from ..errors import FormatError, SourceError, Transient
from .connection import Request, Trust
from .s3errors import ERROR_BODY, PROXY_REFUSALS, Answer, Translator, one_line


class SmallReader:
    """One aiohttp session for a sync; use as `async with SmallReader(...) as reader`."""

    def __init__(
        self,
        connections: int,
        trust: Trust,
        translator: Translator,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self._translator = translator
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, ttl_dns_cache=300, ssl=trust.ssl),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=connect_timeout, sock_read=read_timeout
            ),
            auto_decompress=False,  # the stored bytes are what the SHA-1 covers
        )

    async def __aenter__(self) -> "SmallReader":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._session.close()

    async def read(self, request: Request, size: int | None, limit: int | None) -> bytes:
        """GET the request's URL into memory: it must be `size` bytes if given, and one
        bigger than `limit` is refused unread. (aiohttp itself resends once a request
        whose kept-alive connection S3 had closed.)"""
        url, headers, proxy, where = request
        options = {"proxy": proxy.url, "proxy_headers": proxy.headers} if proxy else {}
        try:
            response = await self._session.get(
                url, headers=headers, allow_redirects=False, **options
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._lost(request, exc) from None
        async with response:
            try:
                if response.status != 200:
                    body = await response.content.read(ERROR_BODY)
                    answer = Answer.parse(response.status, response.headers, body)
                    raise self._translator.answer(where, answer)
                announced = int(response.headers.get("Content-Length", "-1"))
                if announced < 0:
                    raise Transient(f"{where}: an answer without Content-Length")
                if size is not None and announced != size:  # no retry: the bucket disagrees
                    raise SourceError(f"{where}: object is {announced} bytes, expected {size}")
                if limit is not None and announced > limit:
                    raise FormatError(
                        f"{where}: {announced:,} bytes, more than the {limit >> 20} MiB"
                        " a file of its kind can need"
                    )
                data = await response.content.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._lost(request, exc) from None
        if len(data) != announced:
            raise Transient(f"{where}: connection closed after {len(data)} of {announced} bytes")
        return data

    def _lost(self, request: Request, exc: BaseException) -> Exception:
        """A request that got no S3 answer, as one line: fatal when it never will."""
        host = request.url.split("/")[2]
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return self._translator.certificate(host, exc.certificate_error)
        if (
            isinstance(exc, aiohttp.ClientHttpProxyError)
            and exc.status in PROXY_REFUSALS
            and request.proxy
        ):
            detail = f"{exc.status} {exc.message}"
            return self._translator.proxy_refused(request.proxy.url, host, detail)
        return Transient(f"{request.where}: {type(exc).__name__}: {one_line(exc)}")
