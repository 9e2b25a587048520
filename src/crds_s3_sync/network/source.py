"""S3 access: the one seam between a sync and the network.

Listing and HEADs go through botocore (aiobotocore's session: boto3 is not
needed, nor its import time), which resolves endpoints, regions, TLS, proxies
and credentials. Object GETs take a faster path with the same answers
(`addressing` for host and signature, `connection` for trust and proxies):
small bodies through aiohttp on the event loop (`small`), big ones through
`bulk`'s worker threads straight into the file; each reader checks status and
length, and S3's refusals become one line each (`s3errors`). Every call is one
attempt, signed when it is sent; the engine's pacer holds the run's slots and
decides on more. Two answers are mended here and then raised as `Resend` (sent
again at once, no try): a bucket in another region (learned once per bucket)
and credentials that expired in flight (renewed once for all requests that used
them).
"""

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import UNSIGNED
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)

from ..errors import Resend, SetupError, SourceError, SyncError, Transient
from .addressing import Addresses
from .bodies import Bodies, Target
from .connection import Trust, VerifyingSession
from .location import PUBLIC_BUCKETS, Endpoint, Location
from .s3errors import (
    Answer,
    ExpiredCredentials,
    Translator,
    WrongRegion,
    is_certificate_error,
    one_line,
)

T = TypeVar("T")
CONNECT_TIMEOUT, READ_TIMEOUT = 10, 30  # seconds; the read timeout is --timeout


class S3Source:
    """Reads objects and listings, one attempt per call (the engine's pacer decides
    on more, and on how many at once); use as `async with S3Source(...) as source`.
    `connections` is the most requests that may be in flight at once."""

    def __init__(self, endpoint: Endpoint, connections: int, timeout: float = READ_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.connections = connections
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> "S3Source":
        try:
            await self._open()
        except (BotoCoreError, ClientError) as exc:  # a missing profile, a failing process
            await self._stack.aclose()
            raise SetupError(f"AWS configuration: {one_line(exc)}") from None
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _open(self) -> None:
        session = get_session()
        # Listings' LastModified go unused: parsing 2,500 of them with dateutil took
        # longer than the rest of a re-run's planning.
        session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
        credentials, found = None, True
        unsigned = bool(self.endpoint.unsigned)
        if self.endpoint.unsigned is None:
            if self.endpoint.bucket in PUBLIC_BUCKETS:
                unsigned = True  # no need to look for credentials at all
            else:
                credentials = await session.get_credentials()
                found = credentials is not None
                unsigned = not found
        connections = self.connections + 4
        config = AioConfig(
            http_session_cls=VerifyingSession,
            signature_version=UNSIGNED if unsigned else "s3v4",
            max_pool_connections=connections,
            retries={"mode": "standard", "total_max_attempts": 1},  # `retry` decides
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=self.timeout,
            s3={"addressing_style": "path"} if self.endpoint.url else None,
        )
        self._addresses = Addresses(session, config, self.endpoint.url, credentials, self._stack)
        trust = Trust.of(await self._addresses.client(self.endpoint.bucket))
        self._translator = Translator(not unsigned, found, trust.ca_bundle)
        self._bodies = Bodies(trust, self._translator, CONNECT_TIMEOUT, self.timeout, connections)

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    # -- object GETs -------------------------------------------------------------------

    async def read(
        self, location: Location, name: str, *, size: int | None = None, limit: int | None = None
    ) -> memoryview:
        """One GET of a whole object into memory: it must be `size` bytes if given, and
        one bigger than `limit` is refused unread, so a hostile bucket cannot fill
        memory with a "mapping"."""
        return await self._send(location, name, lambda t: self._bodies.read(t, size, limit))

    async def read_range(
        self, location: Location, name: str, start: int, end: int, total: int
    ) -> memoryview:
        """One GET of bytes `start` to `end` (exclusive) of an object of `total` bytes."""
        return await self._send(
            location, name, lambda t: self._bodies.read_range(t, start, end, total)
        )

    async def stream_range(
        self,
        location: Location,
        name: str,
        start: int,
        end: int,
        total: int,
        sink: Callable[[memoryview, int], Awaitable[None]],
    ) -> None:
        """The same, chunk by chunk to `sink`, for parts too big to hold in memory."""
        await self._send(
            location, name, lambda t: self._bodies.stream_range(t, start, end, total, sink)
        )

    async def _send(
        self, location: Location, name: str, send: Callable[[Target], Awaitable[T]]
    ) -> T:
        """Send now, signed with the credentials of now. After a region redirect the
        bucket's region is learned (from S3's answer, else from botocore), and after
        expired credentials fresh ones are had (if there are none, nothing else will
        work either): either way the request is to be resent at once (`Resend`)."""
        bucket = location.bucket
        at = await self._addresses.locate(bucket)
        target = self._bodies.target(
            bucket,
            at.base,
            at.region,
            at.proxy,
            at.credentials,
            location.key(name),
            location.url(name),
        )
        try:
            return await send(target)
        except WrongRegion as exc:
            region = exc.region or await self._region_of(bucket)
            if region is None or region == at.region:
                raise SourceError(str(exc)) from None
            self._addresses.learn(bucket, region)
            raise Resend(str(exc)) from None
        except ExpiredCredentials as exc:
            if not await self._addresses.renew(at.credentials):
                raise SetupError(str(exc)) from None
            raise Resend(str(exc)) from None

    async def _region_of(self, bucket: str) -> str | None:
        """The bucket's region, as S3 tells botocore (a HEAD of the bucket; S3 names the
        region even when it refuses)."""
        client = await self._addresses.client(bucket)
        try:
            response = await client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            response = exc.response
        except BotoCoreError:
            return None
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return headers.get("x-amz-bucket-region")

    # -- botocore requests -------------------------------------------------------------

    async def size(self, location: Location, name: str) -> int:
        """An object's size, from a HEAD."""
        key = location.key(name)
        client = await self._addresses.client(location.bucket)
        response = await self._botocore(
            client.head_object(Bucket=location.bucket, Key=key), location.bucket, key
        )
        return int(response["ContentLength"])

    async def list_names(self, location: Location) -> list[str]:
        """Names of the objects directly under `location` (not in deeper "folders")."""
        prefix = location.key("")
        names = []
        client = await self._addresses.client(location.bucket)
        pages = aiter(
            client.get_paginator("list_objects_v2").paginate(
                Bucket=location.bucket, Prefix=prefix, Delimiter="/"
            )
        )
        while True:
            page = await self._botocore(anext(pages, None), location.bucket, prefix)
            if page is None:
                return names
            names += [item["Key"][len(prefix) :] for item in page.get("Contents", [])]

    async def _botocore(self, call: Awaitable[T], bucket: str, key: str) -> T:
        """One botocore request (which follows region redirects itself), its failure
        translated as the GET paths translate theirs."""
        try:
            return await call
        except (ClientError, BotoCoreError) as exc:
            raise self._explain(exc, bucket, key) from None

    def _explain(self, exc: Exception, bucket: str, key: str) -> SyncError:
        """A botocore error as one line saying what failed and where."""
        where = f"s3://{bucket}/{key}"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            metadata = exc.response.get("ResponseMetadata", {})
            answer = Answer.of(
                metadata.get("HTTPStatusCode") or 0,
                metadata.get("HTTPHeaders", {}),
                error.get("Code"),
                error.get("Message"),
                error.get("Region"),
            )
            translated = self._translator.answer(where, answer)
            if isinstance(translated, WrongRegion):  # botocore could not follow it either
                return SourceError(str(translated))
            if isinstance(translated, ExpiredCredentials):  # botocore signs with fresh ones
                return SetupError(str(translated))
            return translated
        if isinstance(exc, SSLError) and is_certificate_error(exc.kwargs.get("error")):
            host = exc.kwargs.get("endpoint_url", where)
            return self._translator.certificate(host, exc.kwargs["error"])
        if isinstance(exc, EndpointConnectionError):
            return Transient(f"{where}: cannot connect to {exc.kwargs.get('endpoint_url')}")
        if isinstance(exc, ConnectionError | ReadTimeoutError):
            return Transient(f"{where}: {type(exc).__name__}: {one_line(exc)}")
        return SourceError(f"{where}: {type(exc).__name__}: {one_line(exc)}")
