"""ServerSource (a CRDS server's files, through aiohttp) against the stand-in."""

import email.utils
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RULES, reference_size
from crds_server import Serving, StandIn, build_standin
from tls_certificates import make_certificates

from crds_s3_sync.errors import (
    NotFound,
    SourceError,
    Throttled,
    Transient,
    Unreachable,
    WholeOnly,
)
from crds_s3_sync.network.location import Address
from crds_s3_sync.network.server_source import ServerSource, retry_after


@pytest.fixture
def standin() -> Iterator[StandIn]:
    served = build_standin(RULES, "roman", reference_size)
    with Serving(served):
        yield served


def references(standin: StandIn) -> tuple[Address, str, bytes]:
    key = next(key for key in standin.files if key.startswith("references/"))
    return (
        Address(f"{standin.url}/unchecked_get/references/roman"),
        key.rsplit("/", 1)[1],
        standin.files[key],
    )


async def test_reads_whole_ranged_and_sizes(standin: StandIn) -> None:
    where, name, data = references(standin)
    async with ServerSource(standin.url, 4) as source:
        assert bytes(await source.read(where, name, size=len(data))) == data
        assert bytes(await source.read_range(where, name, 3, 9, len(data))) == data[3:9]
        assert await source.size(where, name) == len(data)
        standin.faults.redirect = True
        assert bytes(await source.read(where, name)) == data  # followed
    assert any(path.startswith("/moved/") for _, path in standin.requests)


async def test_failures_in_the_tools_kinds(standin: StandIn) -> None:
    where, name, data = references(standin)
    async with ServerSource(standin.url, 4) as source:
        with pytest.raises(NotFound, match=r"nope\.asdf: not on the server"):
            await source.read(where, "nope.asdf")
        standin.faults.busy = 1
        with pytest.raises(Throttled, match="busy \\(503\\)") as busy:
            await source.read(where, name)
        assert busy.value.retry_after == 1.0  # the stand-in's Retry-After: 1
        standin.faults.drop = 2  # aiohttp sends once more itself on a kept-alive connection
        with pytest.raises(Transient):
            await source.read(where, name)
        standin.faults.whole = True
        with pytest.raises(WholeOnly, match="answered a range with the whole file"):
            await source.read_range(where, name, 3, 9, len(data))
        # the whole file asked as a range: the 200 is what was asked
        assert bytes(await source.read_range(where, name, 0, len(data), len(data))) == data
        with pytest.raises(SourceError, match=f"file is {len(data)} bytes, expected 5"):
            await source.read(where, name, size=5)
    async with ServerSource(standin.url, 4) as source:
        with pytest.raises(Unreachable, match="connection refused"):
            await source.read(Address("http://127.0.0.1:9/x"), name)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after("7") == 7.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (retry_after(later) or 0) <= 30
    assert retry_after(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None
    assert retry_after("\u00b2") is None  # a digit to str.isdigit, not a number
    naive = email.utils.formatdate(time.time() + 30)  # "... -0000": still UTC
    assert naive.endswith("-0000") and 28 <= (retry_after(naive) or 0) <= 30


async def test_a_redirect_from_https_to_http_is_refused(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same stand-in over TLS and over plain HTTP: a file GET over HTTPS sent on to
    plain HTTP is refused, though the bytes are there."""
    certs = make_certificates(tmp_path / "tls")
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))
    plain = standin.url
    secure = Serving(standin, (certs.cert, certs.key), "https://127.0.0.1:0")
    with secure:
        standin.url = f"https://127.0.0.1:{secure.port}"
        where, name, data = references(standin)
        async with ServerSource(standin.url, 4) as source:
            assert bytes(await source.read(where, name)) == data  # trusted, over TLS
            standin.faults.redirect, standin.faults.redirect_to = True, plain
            with pytest.raises(SourceError, match=r"redirected from HTTPS to http://.*refused"):
                await source.read(where, name)
