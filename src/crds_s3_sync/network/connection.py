"""How bytes reach S3: TLS trust and proxies, exactly as botocore resolved them.

The tool's object GETs (`bodies`, through obstore) must go where botocore's
listing and HEADs go, or the first GET fails where the aws CLI works. So
nothing here reads the environment itself: botocore
has already decided the CA bundle (`AWS_CA_BUNDLE`, `ca_bundle` in the AWS
config, `REQUESTS_CA_BUNDLE`, else its default), the client certificate and,
per client endpoint, the proxies (`proxies` in the client config, else
`HTTPS_PROXY`/`HTTP_PROXY` minus `NO_PROXY`, by the standard library's rules),
and this module reads those decisions off the client's own HTTP session (the
only place that touches botocore's private attributes). Proxies are plain
`http://` ones, tunnelling TLS with CONNECT; botocore's `proxies_config`
(`proxy_ca_bundle`, `proxy_client_cert`) for TLS to the proxy itself, and a
client certificate, are not applied to the GETs.
"""

import functools
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiobotocore.httpsession import AIOHTTPSession
from botocore.httpsession import ProxyConfiguration, create_urllib3_context, get_cert_path

from ..errors import SetupError


@dataclass(frozen=True)
class Proxy:
    """A proxy to tunnel through: its address without credentials, for messages, and
    with them, for the client alone (never printed)."""

    url: str
    with_credentials: str = field(hash=False, compare=False, repr=False)


@dataclass(frozen=True)
class Trust:
    """The CA bundle botocore verifies S3's certificates with."""

    ca_bundle: str
    custom: bool  # a bundle the configuration named, not botocore's default

    @classmethod
    def of(cls, client: object) -> "Trust":
        """The trust of `client`, an aiobotocore S3 client."""
        bundle = get_cert_path(client._endpoint.http_session._verify)  # type: ignore[attr-defined]
        return cls(bundle, bundle != get_cert_path(True))


@functools.cache
def verifying_context(bundle: str, client_cert: str | tuple[str, str] | None) -> ssl.SSLContext:
    """botocore's TLS settings with `bundle` trusted and the host-name check on:
    botocore turns the check off for urllib3, which matches host names itself, but
    aiohttp and http.client rely on the context to do it. One context per bundle,
    shared by every connection: loading a bundle costs tens of milliseconds."""
    context = create_urllib3_context()
    context.check_hostname = True
    try:
        context.load_verify_locations(cafile=bundle)
        if isinstance(client_cert, str):
            context.load_cert_chain(client_cert)
        elif isinstance(client_cert, tuple):
            context.load_cert_chain(*client_cert)
    except (OSError, ssl.SSLError) as exc:
        raise SetupError(
            f"{bundle}: cannot load this CA bundle ({exc}); check AWS_CA_BUNDLE"
        ) from None
    return context


def proxies_of(client: object) -> ProxyConfiguration:
    """The proxies botocore decided on for `client`'s endpoint."""
    return client._endpoint.http_session._proxy_config  # type: ignore[attr-defined]


def proxy_for(proxies: ProxyConfiguration, url: str) -> Proxy | None:
    """The proxy botocore uses for `url`, or None to connect directly."""
    proxy_url = proxies.proxy_url_for(url)
    if not proxy_url:
        return None
    parts = urlsplit(proxy_url)
    if parts.scheme != "http":
        raise SetupError(
            f"{parts.scheme}://{parts.hostname}:{parts.port}: only http:// proxies are"
            " supported (the tunnel to S3 is TLS already)"
        )
    bare = parts._replace(netloc=f"{parts.hostname}:{parts.port or 80}")
    return Proxy(urlunsplit(bare), proxy_url)


class VerifyingSession(AIOHTTPSession):
    """aiobotocore's HTTP session (listing, HEADs), verifying TLS as the GETs do.

    aiobotocore inherits botocore's urllib3 context, with the host-name check off,
    and through a proxy it verifies nothing at all unless a `proxy_ca_bundle` is
    set; either way any certificate from a trusted CA, or from anyone, would do.
    """

    def _create_connector(self, proxy_url: str | None) -> aiohttp.TCPConnector:
        client_cert = (self._cert_file, self._key_file) if self._key_file else self._cert_file
        return aiohttp.TCPConnector(
            limit=self._max_pool_connections,
            ssl=verifying_context(get_cert_path(self._verify), client_cert),
            **self._connector_args,
        )
