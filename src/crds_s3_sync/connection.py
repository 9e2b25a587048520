"""How bytes reach S3: TLS trust and proxies, exactly as botocore resolved them.

The tool's own GET paths (aiohttp for small bodies, `bulk`'s threads for big
ones) must go where botocore's listing and HEADs go, or the first GET fails
where the aws CLI works. So nothing here reads the environment itself: botocore
has already decided the CA bundle (`AWS_CA_BUNDLE`, `ca_bundle` in the AWS
config, `REQUESTS_CA_BUNDLE`, else its default), the client certificate and
the proxies (`proxies` in the client config, else `HTTPS_PROXY`/`HTTP_PROXY`
minus `NO_PROXY`, by the standard library's rules) for the client's endpoint,
and this module reads those decisions off the client's own HTTP session.
"""

import ssl
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from botocore.httpsession import ProxyConfiguration, create_urllib3_context, get_cert_path

from .errors import SetupError


class Request(NamedTuple):
    """A signed GET: its URL, its headers, and the s3:// address errors name."""

    url: str
    headers: dict[str, str]
    where: str


@dataclass(frozen=True)
class Proxy:
    """A proxy to tunnel through: its address without credentials, the header that
    carries them, and how messages may name it."""

    url: str
    headers: dict[str, str] = field(hash=False, compare=False)

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class Connection:
    ca_bundle: str  # the CA file in use
    ssl: ssl.SSLContext  # for aiohttp and http.client
    _proxies: ProxyConfiguration

    @classmethod
    def of(cls, client: object) -> "Connection":
        """The trust and proxies of `client`, an aiobotocore S3 client."""
        http = client._endpoint.http_session  # type: ignore[attr-defined]
        bundle = get_cert_path(http._verify)
        context = create_urllib3_context()
        try:
            context.load_verify_locations(cafile=bundle)
            cert = client.meta.config.client_cert  # type: ignore[attr-defined]
            if isinstance(cert, str):
                context.load_cert_chain(cert)
            elif isinstance(cert, tuple):
                context.load_cert_chain(*cert)
        except (OSError, ssl.SSLError) as exc:
            raise SetupError(
                f"{bundle}: cannot load this CA bundle ({exc}); check AWS_CA_BUNDLE"
            ) from None
        return cls(bundle, context, http._proxy_config)

    def proxy_for(self, url: str) -> Proxy | None:
        """The proxy botocore uses for `url`, or None to connect directly."""
        proxy_url = self._proxies.proxy_url_for(url)
        if not proxy_url:
            return None
        parts = urlsplit(proxy_url)
        if parts.scheme != "http":
            raise SetupError(
                f"{parts.scheme}://{parts.hostname}:{parts.port}: only http:// proxies are"
                " supported (the tunnel to S3 is TLS already)"
            )
        bare = parts._replace(netloc=f"{parts.hostname}:{parts.port or 80}")
        return Proxy(urlunsplit(bare), self._proxies.proxy_headers_for(proxy_url))
