"""Object bodies: every GET of an object's bytes goes through obstore (Rust's
object_store, its HTTP and TLS on threads of its own).

Chosen by measurement (`benchmarks/engines.py`): for 5,000 small files it took
1.1 s where aiohttp on uvloop took 2.0 s and blocking `http.client` threads
2.2 s. Where each request goes and what it is sent with comes from the run's
`Addressing` (`environment`, or botocore's `addressing`): each bucket's base URL
in its region (virtual-hosted on AWS, path-style for custom endpoints), the
proxy for it, the CA bundle to trust, and the credentials, with which obstore
signs (SigV4). obstore's own retries are off (the engine's pacer decides), and
so is its own reading of the proxy environment: each store is told its proxy,
or told to go direct. A store is made per base URL, region, proxy and set of
credentials, so renewed credentials get a store of their own.

obstore reports failures as text: S3's answer (status and XML) inside a message.
`_translate` reads that back into the tool's error kinds (`s3errors`); an answer
without its headers loses only S3's `Retry-After`, which the pacer's back-off
stands in for.
"""

import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import obstore
from obstore.store import S3Store

from ..errors import FormatError, SetupError, SourceError, Transient, Unreachable
from .connection import Proxy, Trust
from .s3errors import Answer, Translator, WrongRegion, one_line

CHUNK = 4 << 20  # bytes handed on at a time from a part too big to hold
_STATUS = re.compile(r"status code: (\d{3})\b")
_ERROR_XML = re.compile(r"<Error>.*?</Error>", re.S)
_CERTIFICATE = re.compile(r"InvalidCertificate\((\w+)\)|certificate", re.I)


class Target(NamedTuple):
    """One object to GET: the store that reaches its bucket, its key, the s3://
    address messages name, and what the store was made with."""

    store: S3Store
    key: str
    where: str
    credentials: object | None  # what the store signs with (botocore's frozen ones)
    host: str  # the bucket's base URL
    proxy: Proxy | None


class Bodies:
    """The run's obstore stores, one per (base URL, region, proxy, credentials)."""

    def __init__(
        self,
        trust: Trust,
        translator: Translator,
        connect_timeout: float,
        read_timeout: float,
        connections: int,
    ) -> None:
        self._translator = translator
        self._root = _custom_bundle(trust)
        self._options: dict[str, Any] = {
            "allow_http": True,
            "connect_timeout": timedelta(seconds=connect_timeout),
            "read_timeout": timedelta(seconds=read_timeout),
            "timeout": timedelta(days=1),  # a whole body may take long: `read_timeout` watches
            "pool_max_idle_per_host": str(connections),
            "http1_only": True,  # S3 speaks HTTP/1.1; one connection per request in flight
        }
        self._stores: dict[tuple[str, str, Proxy | None, object | None], S3Store] = {}

    def target(
        self,
        bucket: str,
        base: str,
        region: str,
        proxy: Proxy | None,
        credentials: object | None,
        key: str,
        where: str,
    ) -> Target:
        """The store for `base` (a bucket's URL, as botocore spells it) and `key` in it."""
        index = (base, region, proxy, credentials)
        store = self._stores.get(index)
        if store is None:
            store = self._stores[index] = self._store(bucket, base, region, proxy, credentials)
        return Target(store, key, where, credentials, base, proxy)

    def _store(
        self, bucket: str, base: str, region: str, proxy: Proxy | None, credentials: object | None
    ) -> S3Store:
        options = dict(self._options)
        if self._root is not None:
            options["root_certificate"] = self._root
        # A proxy given stops obstore reading HTTP(S)_PROXY itself; "go direct" is a
        # proxy that this host bypasses, so botocore's decision is the only one.
        options["proxy_url"] = proxy.with_credentials if proxy else "http://127.0.0.1:9"
        if proxy is None:
            options["proxy_excludes"] = urlsplit(base).hostname or ""
        config: dict[str, Any] = {
            "endpoint": base.rstrip("/"),
            "region": region,
            "virtual_hosted_style_request": True,  # the endpoint names the bucket already
        }
        if credentials is None:
            config["skip_signature"] = True
            provider = None
        else:
            frozen = {
                "access_key_id": credentials.access_key,  # type: ignore[attr-defined]
                "secret_access_key": credentials.secret_key,  # type: ignore[attr-defined]
                "token": credentials.token,  # type: ignore[attr-defined]
                "expires_at": None,  # renewed by the source when S3 says they expired
            }

            def provider() -> dict[str, Any]:
                return frozen

        return S3Store(
            bucket,
            config=config,  # type: ignore[arg-type]
            client_options=options,  # type: ignore[arg-type]
            retry_config={"max_retries": 0, "retry_timeout": timedelta(days=1)},  # type: ignore[typeddict-item]
            credential_provider=provider,  # type: ignore[arg-type]
        )

    async def read(self, target: Target, size: int | None, limit: int | None) -> memoryview:
        """A whole object into memory: it must be `size` bytes if given, and one bigger
        than `limit` is refused unread."""
        try:
            result = await obstore.get_async(target.store, target.key)
            announced = result.meta["size"]
            if size is not None and announced != size:  # no retry: the bucket disagrees
                raise SourceError(f"{target.where}: object is {announced} bytes, expected {size}")
            if limit is not None and announced > limit:
                raise FormatError(
                    f"{target.where}: {announced:,} bytes, more than the {limit >> 20} MiB"
                    " a file of its kind can need"
                )
            data = memoryview(await result.bytes_async())  # obstore's buffer, not a copy
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise self._translate(target, exc) from None
        if len(data) != announced:
            raise Transient(f"{target.where}: connection closed after {len(data)} of {announced}")
        return data

    async def read_range(self, target: Target, start: int, end: int, total: int) -> memoryview:
        """Bytes `start` to `end` (exclusive) of an object that must be `total` bytes."""
        try:
            data = await (await self._range(target, start, end, total)).bytes_async()
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise self._translate(target, exc) from None
        if len(data) != end - start:
            raise Transient(
                f"{target.where}: connection closed after {len(data)} of {end - start} bytes"
            )
        return memoryview(data)

    async def stream_range(
        self,
        target: Target,
        start: int,
        end: int,
        total: int,
        sink: Callable[[memoryview, int], Awaitable[None]],
    ) -> None:
        """Bytes `start` to `end` (exclusive) handed to `sink` chunk by chunk with their
        offsets, for parts too big to hold in memory."""
        at = start
        try:
            result = await self._range(target, start, end, total)
            async for chunk in result.stream(min_chunk_size=CHUNK):
                view = memoryview(chunk)
                await sink(view, at)
                at += len(view)
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise self._translate(target, exc) from None
        if at != end:
            raise Transient(
                f"{target.where}: connection closed after {at - start} of {end - start}"
            )

    @staticmethod
    async def _range(target: Target, start: int, end: int, total: int) -> Any:
        """obstore's answer to a ranged GET, its body still to come, from an object of
        `total` bytes (else no retry: the bucket disagrees with server_config)."""
        result = await obstore.get_async(target.store, target.key, options={"range": (start, end)})
        announced = result.meta["size"]
        if announced != total:
            raise SourceError(f"{target.where}: object is {announced} bytes, expected {total}")
        return result

    async def size(self, target: Target) -> int:
        """An object's size, from a HEAD."""
        try:
            meta = await obstore.head_async(target.store, target.key)
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise self._translate(target, exc) from None
        return meta["size"]

    def _translate(self, target: Target, exc: BaseException) -> Exception:
        """obstore's failure as the tool's kind of error, in S3's words."""
        if isinstance(exc, SourceError):
            return exc
        text = str(exc)
        status = _STATUS.search(text)
        if status is not None:
            xml = _ERROR_XML.search(text)
            body = xml.group(0).encode() if xml else b""
            return self._translator.answer(target.where, Answer.parse(int(status[1]), {}, body))
        if "redirect without LOCATION" in text:  # S3's 301 for a bucket in another region
            return WrongRegion(f"{target.where}: PermanentRedirect: the bucket is elsewhere", None)
        host = urlsplit(target.host).netloc
        certificate = _CERTIFICATE.search(text)
        if certificate is not None:
            return self._translator.certificate(host, _Reason(certificate[1] or "not trusted"))
        refused = _refusal(text)
        if target.proxy is not None and refused is not None:
            return self._translator.proxy_refused(target.proxy.url, host, refused)
        cause = _unreachable(text)
        if cause is not None:
            endpoint = urlsplit(target.host)._replace(path="").geturl()
            if target.proxy is not None:
                endpoint = f"{endpoint} through the proxy {target.proxy.url}"
            return Unreachable(f"{target.where}: {cause}", endpoint, cause)
        return Transient(f"{target.where}: {_short(text)}")


class _Reason(Exception):
    """A certificate failure as obstore named it."""


def _refusal(text: str) -> str | None:
    """A proxy's refusal of the tunnel, as obstore's HTTP client names it."""
    if "ProxyAuthRequired" in text:
        return "407 Proxy Authentication Required"
    if re.search(r"Tunnel|tunnel", text) and "Connect" in text:
        return "the CONNECT was answered with an error"
    return None


def _unreachable(text: str) -> str | None:
    """A connection refused or a name that does not resolve, as obstore's HTTP client
    names them."""
    if "ConnectionRefused" in text:
        return "connection refused"
    if "dns error" in text:
        return "the host name does not resolve"
    return None


def _short(text: str) -> str:
    """obstore's message on one line: what failed, and why as its debug dump says
    (the kind of failure and the system's message), without the dump itself."""
    head = text.split("\n\nDebug", 1)[0]
    head = re.sub(r"^Generic S3 error: Error performing \w+ \S+ in \S+ - ", "", head)
    kind = re.search(r"HttpError \{\s*kind: (\w+)", text)
    why = re.findall(r'message: "([^"]+)"', text)
    detail = ", ".join(filter(None, [kind[1] if kind else "", *why[-1:]]))
    return one_line(Exception(f"{head} ({detail})" if detail else head))


def _custom_bundle(trust: Trust) -> str | None:
    """The CA bundle to add to obstore's trusted roots: the one botocore was told to
    use (AWS_CA_BUNDLE, ca_bundle in the AWS config), read once."""
    if not trust.custom:
        return None
    try:
        with open(str(trust.ca_bundle)) as bundle:
            return bundle.read()
    except OSError as exc:
        raise SetupError(
            f"{trust.ca_bundle}: cannot load this CA bundle ({exc.strerror}); check AWS_CA_BUNDLE"
        ) from None
