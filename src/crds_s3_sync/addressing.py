"""Where a bucket's objects are, and how a GET for one is signed: botocore's answer,
per bucket, in the bucket's own region.

A client starts in the region the AWS configuration names (`AWS_REGION`, as the
other AWS SDKs read it, then botocore's `AWS_DEFAULT_REGION` and profile), but
a bucket lives in one region and S3 says which when asked in the wrong one. The
region learned from that answer gets its own botocore client, whose endpoint
rules give the host (virtual-hosted on AWS; path-style for custom endpoints and
dotted names; dual-stack and FIPS as configured) and whose region signs.
"""

import os
from contextlib import AsyncExitStack
from urllib.parse import quote

import anyio
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from .errors import SetupError

SIGNATURE_LIFETIME = 900  # seconds; a GET is signed just before it is sent
_PROBE = "crds-s3-sync-probe"


def configured_region(session: object) -> str:
    """`AWS_REGION` first, as the other AWS SDKs read it; then what botocore finds."""
    return os.environ.get("AWS_REGION") or session.region_name or "us-east-1"  # type: ignore[attr-defined]


class Addresses:
    """Clients per region, bucket regions learned from S3, and GET URLs signed on demand."""

    def __init__(
        self,
        session: object,
        config: Config,
        endpoint_url: str | None,
        credentials: object | None,
        stack: AsyncExitStack,
    ) -> None:
        self._session, self._config, self._endpoint_url = session, config, endpoint_url
        self._credentials = credentials  # None: requests are anonymous
        self._stack = stack
        self.region = configured_region(session)
        self._clients: dict[str, object] = {}
        self._regions: dict[str, str] = {}  # bucket -> its region, as S3 said
        self._bases: dict[tuple[str, str], str] = {}
        self._lock = anyio.Lock()

    async def client(self, bucket: str) -> object:
        """A botocore client in `bucket`'s region (as far as it is known)."""
        region = self._regions.get(bucket, self.region)
        client = self._clients.get(region)
        if client is None:
            async with self._lock:
                client = self._clients.get(region)
                if client is None:
                    client = await self._stack.enter_async_context(
                        self._session.client(  # type: ignore[attr-defined]
                            "s3",
                            endpoint_url=self._endpoint_url,
                            region_name=region,
                            config=self._config,
                        )
                    )
                    self._clients[region] = client
        return client

    def learn(self, bucket: str, region: str) -> bool:
        """S3 says `bucket` is in `region`; False if that was known, so not news."""
        if self._regions.get(bucket, self.region) == region:
            return False
        self._regions[bucket] = region
        return True

    async def url(self, bucket: str, key: str) -> str:
        """A GET URL for `key`, signed now (SigV4 query) unless requests are anonymous.

        botocore spells the bucket's base URL once per region (see `_spelled`); each
        key then costs a quote and botocore's SigV4 query signer, about 60 us
        instead of 200 us for a full presign.
        """
        region = self._regions.get(bucket, self.region)
        base = self._bases.get((bucket, region))
        if base is None:
            spelled = await _spelled(await self.client(bucket), bucket, _PROBE)
            base = self._bases[(bucket, region)] = spelled.removesuffix(_PROBE)
        url = base + quote(key, safe="/~")
        if self._credentials is None:
            return url
        request = AWSRequest(method="GET", url=url)
        credentials = await self._frozen(self._credentials.get_frozen_credentials())  # type: ignore[attr-defined]
        S3SigV4QueryAuth(credentials, "s3", region, expires=SIGNATURE_LIFETIME).add_auth(request)
        return request.url

    async def renew(self) -> None:
        """Fetch fresh credentials now: S3 said the ones in use expired."""
        refresh = getattr(self._credentials, "_protected_refresh", None)
        if refresh is not None:  # only refreshable credentials can be renewed
            await self._frozen(refresh(is_mandatory=True))

    @staticmethod
    async def _frozen(pending: object) -> object:
        """Await a credential call, as one line if the credential source fails."""
        try:
            return await pending  # type: ignore[misc]
        except (BotoCoreError, RuntimeError) as exc:
            raise SetupError(f"cannot get AWS credentials: {exc}") from None


class _Spelled(Exception):
    """Carries the URL botocore was about to send a request to."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


async def _spelled(client: object, bucket: str, key: str) -> str:
    """The URL botocore's own GetObject would send to (endpoint rules, addressing
    style, dual-stack, FIPS, region), without the query; caught just before the
    send, so nothing goes out. (A presigned URL is not the same: botocore presigns
    on the global endpoint whatever the region.)"""

    def capture(request: object, **_: object) -> None:
        raise _Spelled(request.url)  # type: ignore[attr-defined]

    events = client.meta.events  # type: ignore[attr-defined]
    events.register_first("before-send.s3.GetObject", capture, unique_id=_PROBE)
    try:
        await client.get_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    except _Spelled as spelled:
        return spelled.url.split("?", 1)[0]
    finally:
        events.unregister("before-send.s3.GetObject", unique_id=_PROBE)
    raise AssertionError("botocore sent a GetObject despite the probe")
