"""What botocore itself sends: listings, and the probe for a bucket's region.

Listings stay with botocore because obstore refuses a whole listing over one key
it cannot parse (a space, a bracket: legal in S3), where a listing's unexpected
names are to be ignored (`names`). These requests go over a session that
verifies TLS as the GETs do, and their failures become the same one-line errors.
"""

import functools
import ssl

import aiohttp
from aiobotocore.httpsession import AIOHTTPSession
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import create_urllib3_context, get_cert_path

from ..errors import SetupError, SourceError, SyncError, Transient
from .s3errors import (
    Answer,
    ExpiredCredentials,
    Translator,
    WrongRegion,
    is_certificate_error,
    one_line,
)


async def list_names(client: object, bucket: str, prefix: str, translator: Translator) -> list[str]:
    """Names of the objects directly under `prefix` (not in deeper "folders")."""
    names = []
    pages = aiter(
        client.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
            Bucket=bucket, Prefix=prefix, Delimiter="/"
        )
    )
    while True:
        try:
            page = await anext(pages, None)
        except (ClientError, BotoCoreError) as exc:
            raise explain(exc, f"s3://{bucket}/{prefix}", translator) from None
        if page is None:
            return names
        names += [item["Key"][len(prefix) :] for item in page.get("Contents", [])]


async def region_of(client: object, bucket: str) -> str | None:
    """The bucket's region, as S3 tells botocore (a HEAD of the bucket; S3 names the
    region even when it refuses)."""
    try:
        response = await client.head_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    except ClientError as exc:
        response = exc.response
    except BotoCoreError:
        return None
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return headers.get("x-amz-bucket-region")


def explain(exc: Exception, where: str, translator: Translator) -> SyncError:
    """A botocore error as one line saying what failed and where."""
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
        translated = translator.answer(where, answer)
        if isinstance(translated, WrongRegion):  # botocore could not follow it either
            return SourceError(str(translated))
        if isinstance(translated, ExpiredCredentials):  # botocore signs with fresh ones
            return SetupError(str(translated))
        return translated
    if isinstance(exc, SSLError) and is_certificate_error(exc.kwargs.get("error")):
        host = exc.kwargs.get("endpoint_url", where)
        return translator.certificate(host, exc.kwargs["error"])
    if isinstance(exc, EndpointConnectionError):
        return Transient(f"{where}: cannot connect to {exc.kwargs.get('endpoint_url')}")
    if isinstance(exc, ConnectionError | ReadTimeoutError):
        return Transient(f"{where}: {type(exc).__name__}: {one_line(exc)}")
    return SourceError(f"{where}: {type(exc).__name__}: {one_line(exc)}")


@functools.cache
def verifying_context(bundle: str, client_cert: str | tuple[str, str] | None) -> ssl.SSLContext:
    """botocore's TLS settings with `bundle` trusted and the host-name check on:
    botocore turns the check off for urllib3, which matches host names itself, but
    aiohttp relies on the context to do it. One context per bundle, shared by every
    connection: loading a bundle costs tens of milliseconds."""
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


class VerifyingSession(AIOHTTPSession):
    """aiobotocore's HTTP session, verifying TLS as the GETs do.

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
