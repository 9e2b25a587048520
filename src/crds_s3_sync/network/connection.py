"""How bytes reach S3: what a GET is sent with (the bucket's URL, its proxy, the
CA bundle to trust, the keys to sign with), as plain values.

Two places decide them: `environment` for the plain configurations, botocore
(`addressing`) for the rest; both answer with these types, and the object GETs
(`bodies`) follow that answer. Proxies are plain `http://` ones, tunnelling TLS
with CONNECT; botocore's `proxies_config` (`proxy_ca_bundle`,
`proxy_client_cert`) for TLS to the proxy itself, and a client certificate, are
not applied to the GETs.
"""

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit, urlunsplit

from ..errors import SetupError

CONNECT_TIMEOUT = 10  # seconds to open a connection, for GETs and botocore's requests alike
READ_TIMEOUT = 30  # seconds without a byte, from S3 or a server; --timeout


@dataclass(frozen=True)
class Proxy:
    """A proxy to tunnel through: its address without credentials, for messages, and
    with them, for the client alone (never printed)."""

    url: str
    with_credentials: str = field(hash=False, compare=False, repr=False)


@dataclass(frozen=True)
class Trust:
    """The CA bundle S3's certificates are verified with."""

    ca_bundle: str | None  # None: the system's default roots
    custom: bool  # a bundle the configuration named, not the default


class Keys(NamedTuple):
    """Credentials to sign with, named as botocore's frozen credentials are."""

    access_key: str
    secret_key: str
    token: str | None


class Located(NamedTuple):
    """Where a bucket is, and what a GET to it is signed with now, so that an answer
    about it (wrong region, expired credentials) can be told from old news."""

    base: str  # the bucket's URL, to which keys are appended
    region: str
    proxy: Proxy | None
    credentials: object | None  # `Keys` or botocore's frozen credentials; None: anonymous


class Addressing(Protocol):
    """Where buckets are and what requests to them are signed with."""

    trust: Trust
    signed: bool  # requests are signed
    found: bool  # False: credentials were looked for and none found, so none are sent

    async def locate(self, bucket: str) -> Located: ...

    def learn(self, bucket: str, region: str) -> None: ...

    async def renew(self, expired: object) -> bool: ...


def proxy_of(proxy_url: str | None) -> Proxy | None:
    """The proxy at `proxy_url` as botocore spells it (`http://` added when there is no
    scheme), or None to connect directly."""
    if not proxy_url:
        return None
    if not proxy_url.startswith(("http:", "https:")):
        proxy_url = f"http:{proxy_url}" if proxy_url.startswith("//") else f"http://{proxy_url}"
    parts = urlsplit(proxy_url)
    if parts.scheme != "http":
        raise SetupError(
            f"{parts.scheme}://{parts.hostname}:{parts.port}: only http:// proxies are"
            " supported (the tunnel to S3 is TLS already)"
        )
    bare = parts._replace(netloc=f"{parts.hostname}:{parts.port or 80}")
    return Proxy(urlunsplit(bare), proxy_url)
