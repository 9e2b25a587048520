"""A CRDS server's JSON-RPC, as crds's own client speaks it (crds/client/proxy.py).

POST `{server}/json/{method}/{id}/` with `{"jsonrpc": "1.0", "method", "params",
"id"}`; the answer is `{"id", "error", "result"}`, `error` null or `{"message"}`,
and a result may come as `{"crds_encoded": "1.0", "crds_payload": ...}` (base64
of gzip of JSON). Plain HTTPS as users have it set up: HTTPS_PROXY and NO_PROXY
(`Client`), SSL_CERT_FILE or REQUESTS_CA_BUNDLE for trust; a
User-Agent naming the tool. An answer that is not the protocol's (a captive
portal's page, a truncated body) is said as such, naming the URL.
"""

import base64
import binascii
import errno
import gzip
import html
import itertools
import json
import os
import socket
import ssl
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from .. import __version__
from ..errors import FormatError, SetupError, SourceError, SyncError, Transient, Unreachable
from .connection import CONNECT_TIMEOUT

USER_AGENT = f"crds-s3-sync/{__version__}"
TRUST_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")  # AWS_CA_BUNDLE stays S3's
_ids = itertools.count(1)


def trust() -> ssl.SSLContext:
    """The system's trust, or the bundle a user named for plain HTTPS."""
    context = ssl.create_default_context()
    for variable in TRUST_VARIABLES:
        if bundle := os.environ.get(variable):
            try:
                context.load_verify_locations(bundle)
            except (OSError, ssl.SSLError) as exc:
                raise SetupError(f"{variable}={bundle}: no CA bundle there ({exc})") from None
            break
    return context


class Client:
    """At most `connections` kept-alive connections to the server's hosts, each
    through the proxy the user's environment names for it (HTTPS_PROXY, NO_PROXY),
    found once per host: aiohttp's own `trust_env` looks again on a worker thread
    for every request, and reads ~/.netrc each time, which held up a run's requests
    whenever those threads were busy. `timeout` seconds without a byte is a failure.
    Use as `async with Client(...) as client`."""

    def __init__(self, timeout: float, connections: int = 1) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=trust(), limit=connections, limit_per_host=connections
            ),
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT, sock_read=timeout),
        )
        self._proxies: dict[tuple[str, str | None, int | None], dict[str, Any]] = {}

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.session.close()

    def via(self, url: str) -> dict[str, Any]:
        """The proxy arguments of a request to `url`."""
        parsed = URL(url)
        origin = (parsed.scheme, parsed.host, parsed.port)
        found = self._proxies.get(origin)
        if found is None:
            try:
                proxy, auth = get_env_proxy_for_url(parsed)
                found = {"proxy": proxy, "proxy_auth": auth}
            except LookupError:  # none, or NO_PROXY names the host
                found = {}
            except ValueError as exc:
                raise SetupError(f"the proxy for {parsed.host}: {exc}") from None
            self._proxies[origin] = found
        return found


def checked_url(url: str, given_as: str) -> str:
    """An http(s) URL with a host (and a port, if any, that is one), or SyncError."""
    try:
        parsed = URL(url)
        parsed.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("https", "http") or not parsed.host:
        raise SyncError(f"{given_as} {url}: not an http(s):// URL (a host, a port if any)")
    return url.rstrip("/")


def refused_redirect(answer: aiohttp.ClientResponse, where: str) -> None:
    """Redirects are followed, but never from HTTPS to plain HTTP."""
    if any(hop.url.scheme == "https" for hop in answer.history) and answer.url.scheme != "https":
        raise SourceError(f"{where}: redirected from HTTPS to {answer.url}: refused")


def failure(where: str, exc: BaseException) -> Exception:
    """A failed request in the tool's kinds: the setup (trust, proxy) stops the run,
    a host that refuses or does not resolve is Unreachable, the rest may pass."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return SetupError(f"{where}: TLS failed ({exc.__class__.__name__}): check SSL_CERT_FILE")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return SetupError(f"{where}: the proxy refused the connection ({exc})")
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        if isinstance(cause, socket.gaierror):
            return Unreachable(f"{where}: the name does not resolve", exc.host, "no such host")
        if getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return Unreachable(f"{where}: connection refused", exc.host, "connection refused")
    if isinstance(exc, TimeoutError):
        return Transient(f"{where}: no answer in time")
    return Transient(f"{where}: {' '.join(str(exc).split()) or type(exc).__name__}")


async def call(client: Client, server: str, method: str, *params: object) -> Any:
    """`method(*params)` on the CRDS server at `server`, its result decoded."""
    ident = str(next(_ids))
    url = f"{server.rstrip('/')}/json/{method}/{ident}/"
    body = {"jsonrpc": "1.0", "method": method, "params": list(params), "id": ident}
    try:
        async with client.session.post(url, data=json.dumps(body), **client.via(url)) as answer:
            refused_redirect(answer, url)
            status, raw = answer.status, await answer.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise failure(url, exc) from None
    text = raw.decode("utf-8", "replace")
    if status >= 500 or status == 429:
        raise Transient(f"{url}: the server answered {status}")
    try:
        reply = json.loads(text)
        error, result = reply["error"], reply["result"]
    except (ValueError, KeyError, TypeError):
        raise FormatError(
            f"{url}: answered {status} with no JSON-RPC answer (it begins {text[:40]!r}):"
            " a proxy's or a captive portal's page?"
        ) from None
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        raise SyncError(f"{server}: {method}: {' '.join(html.unescape(str(message)).split())}")
    return decode(result, url)


def decode(result: Any, where: str) -> Any:
    """A result as sent, or what crds's encoding (base64 of gzip of JSON) holds."""
    if not (isinstance(result, dict) and "crds_encoded" in result):
        return result
    try:
        packed = base64.b64decode(result["crds_payload"], validate=True)
        return json.loads(gzip.decompress(packed))
    except (KeyError, binascii.Error, OSError, EOFError, ValueError):
        raise FormatError(f"{where}: an encoded result that does not decode") from None
