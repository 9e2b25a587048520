"""S3 access: the `Store` (`store`) that reads S3 buckets.

Every request for an object, its size or a listing goes through obstore
(`bodies`), sent where and as `Addressing` says: the environment's plain
answers where they suffice (`environment`), else botocore's (`addressing`,
imported only then, as it costs more to import than a re-run takes). Each
reader checks status and length, and S3's refusals become one line each
(`s3errors`). Every call is one attempt, signed when it is sent; the engine's
pacer holds the run's slots and decides on more. Two answers are mended here and
then raised as `Resend` (sent again at once, no try): a bucket in another region
(learned once per bucket) and credentials that expired in flight (renewed once
for all requests that used them).
"""

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, TypeVar

from ..errors import Resend, SetupError, SourceError
from .bodies import Bodies, Target
from .connection import CONNECT_TIMEOUT, READ_TIMEOUT, Addressing
from .environment import plain
from .location import Endpoint, Location
from .s3errors import ExpiredCredentials, Translator, WrongRegion

if TYPE_CHECKING:
    from .addressing import Addresses

T = TypeVar("T")


class S3Source:
    """Reads objects and listings, one attempt per call (the engine's pacer decides
    on more, and on how many at once); use as `async with S3Source(...) as source`.
    `connections` is the most requests that may be in flight at once."""

    def __init__(self, endpoint: Endpoint, connections: int, timeout: float = READ_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.connections = connections
        self._stack = AsyncExitStack()
        self._botocore: Addresses | None = None

    async def __aenter__(self) -> "S3Source":
        try:
            addresses: Addressing = plain(self.endpoint) or await self._botocore_addresses()
            self._translator = Translator(
                addresses.signed, addresses.found, addresses.trust.ca_bundle
            )
            self._bodies = Bodies(
                addresses.trust,
                self._translator,
                CONNECT_TIMEOUT,
                self.timeout,
                self.connections + 4,
            )
        except BaseException:
            await self._stack.aclose()
            raise
        self._addresses = addresses
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def _botocore_addresses(self) -> "Addresses":
        """botocore, set up on first need (see the module's note)."""
        if self._botocore is None:
            from .addressing import open_addresses

            self._botocore = await open_addresses(
                self.endpoint, self.connections + 4, self.timeout, self._stack
            )
        return self._botocore

    async def _botocore_client(self, bucket: str) -> object:
        """botocore's client for `bucket`, for what botocore sends itself (`listing`)."""
        return await (await self._botocore_addresses()).client(bucket)

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
        """The bucket's region, as S3 tells botocore, when the answer did not say."""
        from .listing import region_of

        return await region_of(await self._botocore_client(bucket), bucket)

    # -- sizes and listings ------------------------------------------------------------

    async def size(self, location: Location, name: str) -> int:
        """An object's size, from a HEAD."""
        return await self._send(location, name, self._bodies.size)

    async def list_names(self, location: Location) -> list[str]:
        """Names of the objects directly under `location` (not in deeper "folders"),
        listed by botocore (see `listing`)."""
        from .listing import list_names

        client = await self._botocore_client(location.bucket)
        return await list_names(client, location.bucket, location.key(""), self._translator)
