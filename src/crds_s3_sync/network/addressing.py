"""Where a bucket's objects are, and what a GET for one is signed with: botocore's
answer, per bucket, in the bucket's own region, for every configuration the
environment alone does not settle (`environment`). Imported only then: botocore,
aiobotocore and aiohttp cost about 0.7 s to import and set up.

A client starts in the region the AWS configuration names (`AWS_REGION`, as the
other AWS SDKs read it, then botocore's `AWS_DEFAULT_REGION` and profile), but
a bucket lives in one region and S3 says which when asked in the wrong one. The
region learned from that answer gets its own botocore client, whose endpoint
rules give the host (virtual-hosted on AWS; path-style for custom endpoints and
dotted names; dual-stack and FIPS as configured) and whose region signs. The CA
bundle and proxies are read off the client's own HTTP session (the only place
that touches botocore's private attributes); what the clients send themselves
is in `listing`.
"""

import os
from contextlib import AsyncExitStack

import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import UNSIGNED
from botocore.exceptions import BotoCoreError, ClientError
from botocore.httpsession import ProxyConfiguration, get_cert_path

from ..errors import SetupError
from .connection import CONNECT_TIMEOUT, Located, Proxy, Trust, proxy_of
from .listing import VerifyingSession
from .location import PUBLIC_BUCKETS, Endpoint
from .s3errors import one_line

_PROBE = "crds-s3-sync-probe"


def configured_region(session: object) -> str:
    """`AWS_REGION` first, as the other AWS SDKs read it; then what botocore finds."""
    configured = session.get_config_variable("region")  # type: ignore[attr-defined]
    return os.environ.get("AWS_REGION") or configured or "us-east-1"


async def open_addresses(
    endpoint: Endpoint, connections: int, timeout: float, stack: AsyncExitStack
) -> "Addresses":
    """botocore set up for `endpoint`: its credentials found (unless the requests are
    to be anonymous) and a client made in the configured region, whose CA bundle
    the run trusts; a broken AWS configuration is one line."""
    try:
        session = get_session()
        # Listings' LastModified go unused: parsing 2,500 of them with dateutil took
        # longer than the rest of a re-run's planning.
        session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
        credentials, found = None, True
        unsigned = bool(endpoint.unsigned)
        if endpoint.unsigned is None:
            if endpoint.bucket in PUBLIC_BUCKETS:
                unsigned = True  # no need to look for credentials at all
            else:
                credentials = await session.get_credentials()
                found = credentials is not None
                unsigned = not found
        config = AioConfig(
            http_session_cls=VerifyingSession,
            signature_version=UNSIGNED if unsigned else "s3v4",
            max_pool_connections=connections,
            retries={"mode": "standard", "total_max_attempts": 1},  # the pacer decides
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=timeout,
            s3={"addressing_style": "path"} if endpoint.url else None,
        )
        addresses = Addresses(session, config, endpoint.url, credentials, found, stack)
        addresses.trust = _trust_of(await addresses.client(endpoint.bucket))
    except (BotoCoreError, ClientError) as exc:  # a missing profile, a failing process
        raise SetupError(f"AWS configuration: {one_line(exc)}") from None
    return addresses


class Addresses:
    """Clients per region, bucket regions learned from S3, and GET URLs signed on demand."""

    trust: Trust  # the first client's, set by `open_addresses`

    def __init__(
        self,
        session: object,
        config: AioConfig,
        endpoint_url: str | None,
        credentials: object | None,
        found: bool,
        stack: AsyncExitStack,
    ) -> None:
        self._session, self._config, self._endpoint_url = session, config, endpoint_url
        self._credentials = credentials  # None: requests are anonymous
        self.signed = credentials is not None
        self.found = found  # False: looked for, none found
        self._stack = stack
        self.region = configured_region(session)
        self._clients: dict[str, object] = {}
        self._proxies: dict[str, ProxyConfiguration] = {}  # per region, as botocore decided
        self._regions: dict[str, str] = {}  # bucket -> its region, as S3 said
        # (bucket, region) -> base URL and proxy: botocore picks a proxy by the URL's
        # scheme alone, so one answer serves every key of the bucket.
        self._bases: dict[tuple[str, str], tuple[str, Proxy | None]] = {}
        self._client_lock = anyio.Lock()
        self._probe_lock = anyio.Lock()
        self._renew_lock = anyio.Lock()

    async def client(self, bucket: str) -> object:
        """A botocore client in `bucket`'s region (as far as it is known)."""
        region = self._regions.get(bucket, self.region)
        client = self._clients.get(region)
        if client is None:
            async with self._client_lock:
                client = self._clients.get(region)
                if client is None:
                    try:
                        client = await self._stack.enter_async_context(
                            self._session.create_client(  # type: ignore[attr-defined]
                                "s3",
                                endpoint_url=self._endpoint_url,
                                region_name=region,
                                config=self._config,
                            )
                        )
                    except (BotoCoreError, ValueError) as exc:
                        raise SetupError(f"cannot set up S3 in {region}: {one_line(exc)}") from None
                    self._proxies[region] = client._endpoint.http_session._proxy_config  # type: ignore[attr-defined]
                    self._clients[region] = client
        return client

    def learn(self, bucket: str, region: str) -> None:
        """S3 says `bucket` is in `region`."""
        self._regions[bucket] = region

    async def locate(self, bucket: str) -> Located:
        """Where `bucket`'s objects are now: its base URL in its region (as botocore's
        own GetObject would spell it, found once per bucket and region: `_spelled`),
        the proxy botocore picked for that URL, and the credentials to sign with now
        (None: anonymous)."""
        region = self._regions.get(bucket, self.region)
        known = self._bases.get((bucket, region))
        if known is None:
            async with self._probe_lock:  # one probe at a time: they share a handler id
                known = self._bases.get((bucket, region))
                if known is None:
                    spelled = await _spelled(await self.client(bucket), bucket, _PROBE)
                    base = spelled.removesuffix(_PROBE)
                    known = self._bases[(bucket, region)] = (
                        base,
                        proxy_of(self._proxies[region].proxy_url_for(base)),
                    )
        base, proxy = known
        credentials = None
        if self._credentials is not None:
            credentials = await self._frozen(self._credentials.get_frozen_credentials())  # type: ignore[attr-defined]
        return Located(base, region, proxy, credentials)

    async def renew(self, expired: object) -> bool:
        """S3 said `expired` credentials had expired: have fresh ones (once for all the
        requests that were in flight with them). False if none but those are to be had."""
        refresh = getattr(self._credentials, "_protected_refresh", None)
        if refresh is None:  # only refreshable credentials can be renewed
            return False
        async with self._renew_lock:
            current = await self._frozen(self._credentials.get_frozen_credentials())  # type: ignore[attr-defined]
            if current == expired:
                await self._frozen(refresh(is_mandatory=True))
                current = await self._frozen(self._credentials.get_frozen_credentials())  # type: ignore[attr-defined]
        return current != expired

    @staticmethod
    async def _frozen(pending: object) -> object:
        """Await a credential call, as one line if the credential source fails."""
        try:
            return await pending  # type: ignore[misc]
        except (BotoCoreError, ClientError, RuntimeError) as exc:
            raise SetupError(f"cannot get AWS credentials: {one_line(exc)}") from None


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
    except (BotoCoreError, ClientError) as exc:  # e.g. a bucket name S3 cannot address
        raise SetupError(f"s3://{bucket}: {one_line(exc)}") from None
    finally:
        events.unregister("before-send.s3.GetObject", unique_id=_PROBE)
    raise AssertionError("botocore sent a GetObject despite the probe")


def _trust_of(client: object) -> Trust:
    """The CA bundle `client` verifies with; None where it is botocore's default, as
    the GETs then trust the system's roots."""
    bundle = get_cert_path(client._endpoint.http_session._verify)  # type: ignore[attr-defined]
    custom = bundle != get_cert_path(True)
    return Trust(bundle if custom else None, custom)
