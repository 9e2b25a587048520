"""S3 access: one aioboto3 client shared by every stage of a sync.

botocore resolves endpoints, signs, lists and HEADs, with its "standard" retry
mode (throttling, 5xx, connection errors; exponential backoff with jitter).
Object GETs go through aiohttp with URLs botocore signs (see `open`), so their
retries are ours: `get_bytes` here, the transfer stage for downloads, both
deciding with `is_transient`.
"""

import hashlib
import random
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote

import aioboto3
import aiohttp
import anyio
from botocore import UNSIGNED
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from .bulk import THREADS as BULK_THREADS
from .bulk import BulkReader, Request
from .errors import FormatError, NotFound, SourceError, Transient
from .settings import PUBLIC_BUCKETS, Location, Settings

# Tries per object GET (or part) before it is reported failed.
ATTEMPTS = 5


_THROTTLING = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"})


@dataclass(frozen=True)
class ObjectStream:
    body: aiohttp.StreamReader
    size: int


class S3Source:
    """Reads objects and listings; use as `async with S3Source(settings, jobs) as source`."""

    def __init__(self, settings: Settings, connections: int) -> None:
        self.settings = settings
        self.connections = connections
        self.unsigned = bool(settings.unsigned)
        self.credentials_found = True
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> "S3Source":
        session = aioboto3.Session()
        self._credentials = None
        if self.settings.unsigned is None:
            if self.settings.config.bucket in PUBLIC_BUCKETS:
                self.unsigned = True  # no need to look for credentials at all
            else:
                self._credentials = await session.get_credentials()
                self.credentials_found = self._credentials is not None
                self.unsigned = not self.credentials_found
        config = Config(
            signature_version=UNSIGNED if self.unsigned else "s3v4",
            max_pool_connections=self.connections,
            retries={"mode": "standard", "max_attempts": 6},
            connect_timeout=10,
            read_timeout=60,
            s3={"addressing_style": "path"} if self.settings.endpoint_url else None,
        )
        self._client = await self._stack.enter_async_context(
            session.client(
                "s3",
                endpoint_url=self.settings.endpoint_url,
                region_name=session.region_name or "us-east-1",
                config=config,
            )
        )
        self._region = self._client.meta.region_name
        self._bases: dict[str, str] = {}
        self._http = await self._stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
                auto_decompress=False,  # the stored bytes are what the SHA-1 covers
            )
        )
        self._bulk = BulkReader(min(BULK_THREADS, self.connections), 60, self._refusal)
        self._stack.callback(self._bulk.close)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def get_bytes(self, location: Location, name: str, limit: int) -> bytes:
        """A whole small object (server_config, a mapping, a context pickle), retried if
        it may work next time; one bigger than `limit` is refused unread, so a hostile
        bucket cannot fill memory with a "mapping"."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self.open(location, name) as stream:
                    if stream.size > limit:
                        raise FormatError(
                            f"s3://{location.bucket}/{location.key(name)}: {stream.size:,} bytes,"
                            f" more than the {limit >> 20} MiB a file of its kind can need"
                        )
                    return await stream.body.read()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt == ATTEMPTS:
                    where = f"s3://{location.bucket}/{location.key(name)}"
                    message = f"{where}: {_one_line(exc)} (gave up after {attempt} tries)"
                    raise Transient(message) from None
            await anyio.sleep(backoff(attempt))
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def open(
        self, location: Location, name: str, byte_range: tuple[int, int] | None = None
    ) -> AsyncIterator[ObjectStream]:
        """Stream one object, or the inclusive `byte_range` of it.

        GETs skip botocore's request pipeline, which costs about 1.7 ms of CPU per
        request and made the event loop the bottleneck for small files; aiohttp,
        which aiobotocore uses anyway, sends them to the URL `_url` makes.
        """
        url, headers, where = await self._request(location, name, byte_range)
        try:
            response = await self._http.get(url, headers=headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Transient(f"{where}: {type(exc).__name__}: {_one_line(exc)}") from None
        async with response:
            if response.status not in (200, 206) or (byte_range and response.status != 206):
                raise self._refusal(response.status, await response.content.read(4096), where)
            yield ObjectStream(response.content, int(response.headers["Content-Length"]))

    async def copy_into(
        self,
        location: Location,
        name: str,
        fd: int,
        offset: int,
        length: int,
        byte_range: tuple[int, int] | None = None,
        digest: "hashlib._Hash | None" = None,
    ) -> None:
        """Write one object, or the inclusive `byte_range` of it, to `fd` at `offset`,
        feeding `digest` on the way; for big bodies (see `bulk`)."""
        request = await self._request(location, name, byte_range)
        await self._bulk.copy(request, fd, offset, length, digest)

    async def _request(
        self, location: Location, name: str, byte_range: tuple[int, int] | None
    ) -> Request:
        key = location.key(name)
        try:
            url = await self._url(location.bucket, key)
        except BotoCoreError as exc:
            raise self.explain(exc, location.bucket, key) from None
        headers = {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"} if byte_range else {}
        return Request(url, headers, f"s3://{location.bucket}/{key}")

    async def _url(self, bucket: str, key: str) -> str:
        """A GET URL for `key`, presigned with SigV4 unless requests are anonymous.

        botocore works out the bucket's base URL once (endpoint, addressing
        style); each key then costs a quote and, when signing, botocore's own
        SigV4 query signer: about 60 us instead of 200 us for a full presign.
        """
        base = self._bases.get(bucket)
        if base is None:
            probe = await self._client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": "probe"}
            )
            base = self._bases[bucket] = probe.split("?", 1)[0].removesuffix("probe")
        url = base + quote(key, safe="/~")
        if self._credentials is None:
            return url
        request = AWSRequest(method="GET", url=url)
        credentials = await self._credentials.get_frozen_credentials()  # refreshes if due
        S3SigV4QueryAuth(credentials, "s3", self._region, expires=3600).add_auth(request)
        return request.url

    def _refusal(self, status: int, body: bytes, where: str) -> SourceError:
        """An S3 error answer (status and XML error code) as one line."""
        match = re.search(rb"<Code>([^<]{1,64})</Code>", body)
        code = match.group(1).decode(errors="replace") if match else str(status)
        return self._classify(where, status, code, f"HTTP {status} {code}")

    def _classify(self, where: str, status: int | None, code: str, detail: str) -> SourceError:
        """One verdict for S3's answers, whether aiohttp or botocore received them."""
        if code == "NoSuchBucket":
            return SourceError(f"{where}: no such bucket")
        if code in ("NoSuchKey", "NotFound") or status == 404:
            return NotFound(f"{where}: no such object")
        if code in ("AccessDenied", "InvalidAccessKeyId", "Forbidden") or status == 403:
            return SourceError(f"{where}: access denied{self._credentials_hint()}")
        kind = Transient if code in _THROTTLING or (status or 0) >= 500 else SourceError
        return kind(f"{where}: {detail}")

    def _credentials_hint(self) -> str:
        if self.unsigned and not self.credentials_found:
            return (
                " (no AWS credentials were found, so the request was unsigned;"
                " set AWS_PROFILE or credentials for a private bucket)"
            )
        return ""

    async def size(self, location: Location, name: str) -> int:
        key = location.key(name)
        try:
            response = await self._client.head_object(Bucket=location.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self.explain(exc, location.bucket, key) from None
        return int(response["ContentLength"])

    async def list_names(self, location: Location) -> list[str]:
        """Names of the objects directly under `location` (not in deeper "folders")."""
        paginator = self._client.get_paginator("list_objects_v2")
        prefix = location.key("")
        names = []
        try:
            async for page in paginator.paginate(
                Bucket=location.bucket, Prefix=prefix, Delimiter="/"
            ):
                names += [item["Key"][len(prefix) :] for item in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise self.explain(exc, location.bucket, prefix) from None
        return names

    def explain(self, exc: Exception, bucket: str, key: str) -> SourceError:
        """Turn a botocore error into one line that says what failed and where."""
        where = f"s3://{bucket}/{key}"
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return self._classify(where, status, code, f"{code or status}: {_one_line(exc)}")
        if isinstance(exc, EndpointConnectionError):
            return Transient(f"{where}: cannot connect to {exc.kwargs.get('endpoint_url')}")
        if isinstance(exc, ConnectionError | ReadTimeoutError):
            return Transient(f"{where}: {type(exc).__name__}: {_one_line(exc)}")
        return SourceError(f"{where}: {type(exc).__name__}: {_one_line(exc)}")


def is_transient(exc: BaseException) -> bool:
    """Worth another try: throttling, a server error, a dropped or stalled stream.

    botocore's own errors never get here: `explain` turns them into SourceErrors.
    """
    return isinstance(exc, Transient | aiohttp.ClientError | TimeoutError)


def backoff(attempt: int, base: float = 0.25, cap: float = 20.0) -> float:
    """Exponential backoff with full jitter, so retrying clients do not move in step."""
    return random.uniform(0, min(cap, base * 2**attempt))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
