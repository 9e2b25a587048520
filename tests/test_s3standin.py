"""Self-test of tests/s3standin.py, with boto3 itself rather than our CLI.

Why: the stand-in is only worth trusting if the real client it imitates S3 for
(botocore, with no endpoint_url, through an HTTPS proxy, verifying TLS) gets from it
what it would get from S3: the same host names, signatures that verify, the region
redirects botocore knows how to follow, and S3's error codes. If these tests pass,
a CLI test that fails against the stand-in points at the CLI.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError, SSLError
from connect_proxy import ConnectProxy
from s3standin import S3StandIn
from tls_certificates import Certificates, make_certificates

ACCESS_KEY = "AKIASTANDINTEST00001"
SECRET = "standin/secret/key/for/tests/only/0000000"
PRIVATE, PUBLIC, WEST = "crds-standin-private", "crds-standin-public", "crds-standin-west"
DATA = bytes(range(256)) * 40  # 10 KiB, every byte value
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY")

MakeClient = Callable[..., BaseClient]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("s3standin-certificates"))


@pytest.fixture(autouse=True)
def no_machine_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the proxies a test names may be used, never the machine's."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def standin(certs: Certificates) -> Iterator[S3StandIn]:
    with S3StandIn(certs) as s3:
        s3.add_credentials(ACCESS_KEY, SECRET)
        s3.add_bucket(PRIVATE)
        s3.add_bucket(PUBLIC, public=True)
        s3.add_bucket(WEST, region="us-west-2")
        for bucket in (PRIVATE, PUBLIC, WEST):
            s3.put(bucket, "crds/mappings/roman/roman_0001.pmap", b"header = {}\n")
            s3.put(bucket, "crds/references/roman/a.asdf", DATA)
            s3.put(bucket, "crds/references/roman/b.asdf", DATA[:100])
            s3.put(bucket, "crds/config/roman/server_config", b"{}")
        yield s3


@pytest.fixture
def proxy(standin: S3StandIn) -> Iterator[ConnectProxy]:
    with ConnectProxy(standin.port) as tunnel:
        yield tunnel


@pytest.fixture
def client(certs: Certificates, proxy: ConnectProxy, clean_environment: None) -> MakeClient:
    """A boto3 S3 client as a user would have it (no endpoint_url), whose HTTPS goes
    through `proxy` and trusts only the test CA."""
    session = boto3.session.Session()

    def make(
        region: str = "us-east-1",
        key: str = ACCESS_KEY,
        secret: str = SECRET,
        token: str | None = None,
        proxy_url: str | None = None,
        verify: str | bool | None = None,
        **config: Any,
    ) -> BaseClient:
        settings = Config(
            proxies={"https": proxy_url or proxy.url},
            # One attempt in all: botocore's `max_attempts` would count retries only.
            retries={"total_max_attempts": 1, "mode": "standard"},
            **config,
        )
        return session.client(
            "s3",
            region_name=region,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=token,
            config=settings,
            verify=str(certs.ca) if verify is None else verify,
        )

    return make


def error_of(caught: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = caught.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"].get("Message", ""),
    )


def test_signed_private_bucket_through_proxy(
    client: MakeClient, standin: S3StandIn, proxy: ConnectProxy
) -> None:
    s3 = client()
    listed = s3.list_objects_v2(Bucket=PRIVATE, Prefix="crds/", Delimiter="/")
    prefixes = [p["Prefix"] for p in listed["CommonPrefixes"]]
    assert prefixes == ["crds/config/", "crds/mappings/", "crds/references/"]
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=PRIVATE, Prefix="crds/", PaginationConfig={"PageSize": 2}
    )
    keys = [item["Key"] for page in pages for item in page["Contents"]]
    assert keys == [
        "crds/config/roman/server_config",
        "crds/mappings/roman/roman_0001.pmap",
        "crds/references/roman/a.asdf",
        "crds/references/roman/b.asdf",
    ]

    whole = s3.get_object(Bucket=PRIVATE, Key="crds/references/roman/a.asdf")
    assert whole["Body"].read() == DATA
    part = s3.get_object(Bucket=PRIVATE, Key="crds/references/roman/a.asdf", Range="bytes=2-5")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == f"bytes 2-5/{len(DATA)}"
    assert part["Body"].read() == DATA[2:6]
    head = s3.head_object(Bucket=PRIVATE, Key="crds/references/roman/b.asdf")
    assert head["ContentLength"] == 100
    assert (
        s3.head_bucket(Bucket=PRIVATE)["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"]
        == "us-east-1"
    )

    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=PRIVATE, Key="crds/nothing")
    assert error_of(missing)[:2] == (404, "NoSuchKey")

    # botocore, for us-east-1, addresses buckets virtual-hosted on the global endpoint.
    host = f"{PRIVATE}.s3.amazonaws.com"
    assert {seen.host for seen in standin.requests} == {host}
    assert {seen.access_key for seen in standin.requests} == {ACCESS_KEY}
    assert [seen.status for seen in standin.requests] == [200, 200, 200, 200, 206, 200, 200, 404]
    assert sorted(standin.requests[0].query) == [
        "delimiter",
        "encoding-type",
        "list-type",
        "prefix",
    ]
    assert standin.first_request_at == standin.requests[0].time
    assert proxy.connects and set(proxy.connects) == {(f"{host}:443", 200)}


def test_anonymous_reads_public_buckets_only(client: MakeClient, standin: S3StandIn) -> None:
    anonymous = client(signature_version=UNSIGNED)
    body = anonymous.get_object(Bucket=PUBLIC, Key="crds/references/roman/b.asdf")["Body"]
    assert body.read() == DATA[:100]
    assert anonymous.list_objects_v2(Bucket=PUBLIC)["KeyCount"] == 4
    with pytest.raises(ClientError) as refused:
        anonymous.get_object(Bucket=PRIVATE, Key="crds/references/roman/b.asdf")
    assert error_of(refused) == (403, "AccessDenied", "Access Denied")
    assert [(seen.access_key, seen.status) for seen in standin.requests] == [
        (None, 200),
        (None, 200),
        (None, 403),
    ]
    # A signed request to a public bucket is still checked.
    with pytest.raises(ClientError) as forged:
        client(secret="wrong").get_object(Bucket=PUBLIC, Key="crds/references/roman/b.asdf")
    assert error_of(forged)[:2] == (403, "SignatureDoesNotMatch")


def test_wrong_region_clients_follow_redirects(client: MakeClient, standin: S3StandIn) -> None:
    key = "crds/references/roman/b.asdf"
    # A us-west-2 client asks its own regional endpoint about a us-east-1 bucket: 301.
    west = client(region="us-west-2")
    assert west.get_object(Bucket=PRIVATE, Key=key)["Body"].read() == DATA[:100]
    # ...then, after the 301, to the bucket's region: its regional endpoint, not the
    # global one a us-east-1 client starts with.
    assert [(s.host, s.access_key, s.region, s.status, s.error) for s in standin.requests] == [
        (
            f"{PRIVATE}.s3.us-west-2.amazonaws.com",
            ACCESS_KEY,
            "us-west-2",
            301,
            "PermanentRedirect",
        ),
        (f"{PRIVATE}.s3.us-east-1.amazonaws.com", ACCESS_KEY, "us-east-1", 200, None),
    ]
    standin.requests.clear()

    # A us-east-1 client signs for us-east-1 at the global endpoint: 400, then retried.
    east = client(region="us-east-1")
    assert east.head_object(Bucket=WEST, Key=key)["ContentLength"] == 100
    assert east.get_object(Bucket=WEST, Key=key)["Body"].read() == DATA[:100]
    assert [(s.method, s.host, s.region, s.status) for s in standin.requests] == [
        ("HEAD", f"{WEST}.s3.amazonaws.com", "us-east-1", 400),
        ("HEAD", f"{WEST}.s3.us-west-2.amazonaws.com", "us-west-2", 200),
        # the client remembers the bucket's region from then on
        ("GET", f"{WEST}.s3.us-west-2.amazonaws.com", "us-west-2", 200),
    ]


def test_wrong_region_errors_as_s3_writes_them(client: MakeClient) -> None:
    """What botocore's redirector reads: the code, <Region> and x-amz-bucket-region."""
    s3 = client(region="us-east-1")
    answers: list[dict[str, Any]] = []

    def record(response: tuple[Any, dict[str, Any]] | None, **_: Any) -> None:
        if response is not None:
            answers.append(response[1])

    # Runs before the redirector, on each answer the client considers retrying.
    s3.meta.events.register_first("needs-retry.s3.ListObjectsV2", record)
    assert s3.list_objects_v2(Bucket=WEST)["KeyCount"] == 4
    error = answers[0]["Error"]
    assert (error["Code"], error["Region"]) == ("AuthorizationHeaderMalformed", "us-west-2")
    assert error["Message"] == (
        "The authorization header is malformed; the region 'us-east-1' is wrong;"
        " expecting 'us-west-2'"
    )
    assert answers[0]["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-west-2"

    west = client(region="us-west-2")
    answers.clear()
    west.meta.events.register_first("needs-retry.s3.ListObjectsV2", record)
    assert west.list_objects_v2(Bucket=PRIVATE)["KeyCount"] == 4
    error = answers[0]["Error"]
    assert (error["Code"], error["Endpoint"], error["Bucket"]) == (
        "PermanentRedirect",
        f"{PRIVATE}.s3.amazonaws.com",
        PRIVATE,
    )
    assert answers[0]["ResponseMetadata"]["HTTPStatusCode"] == 301
    assert answers[0]["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "us-east-1"


def test_presigned_urls_expire(
    client: MakeClient, standin: S3StandIn, proxy: ConnectProxy, certs: Certificates
) -> None:
    # Without signature_version, botocore presigns for us-east-1 with SigV2.
    url = client(signature_version="s3v4").generate_presigned_url(
        "get_object",
        Params={"Bucket": PRIVATE, "Key": "crds/references/roman/b.asdf"},
        ExpiresIn=60,
    )
    assert url.startswith(f"https://{PRIVATE}.s3.amazonaws.com/")
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": proxy.url}),
        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(certs.ca))),
    )
    with opener.open(url, timeout=10) as answer:
        assert answer.read() == DATA[:100]

    standin.skew = 61  # the server's clock is now past X-Amz-Date + X-Amz-Expires
    with pytest.raises(urllib.error.HTTPError) as expired:
        opener.open(url, timeout=10)
    body = expired.value.read().decode()
    assert expired.value.code == 403
    assert "<Code>AccessDenied</Code>" in body
    assert "<Message>Request has expired</Message>" in body
    assert "<Expires>" in body and "<ServerTime>" in body
    assert expired.value.headers["Date"]  # from the skewed clock

    standin.skew = -3600  # signed "an hour in the future" for the server
    with pytest.raises(urllib.error.HTTPError) as early:
        opener.open(url, timeout=10)
    assert "<Message>Request is not yet valid</Message>" in early.value.read().decode()
    assert [seen.status for seen in standin.requests] == [200, 403, 403]
    assert "X-Amz-Signature" in standin.requests[0].query

    # A URL presigned for the wrong region cannot be redirected: S3 just refuses it.
    standin.skew = 0
    wrong = client(signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": WEST, "Key": "crds/references/roman/b.asdf"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(wrong, timeout=10)
    body = refused.value.read().decode()
    assert refused.value.code == 400
    assert "<Code>AuthorizationQueryParametersError</Code>" in body
    assert "the region 'us-east-1' is wrong; expecting 'us-west-2'" in body
    assert refused.value.headers["x-amz-bucket-region"] == "us-west-2"


def test_credential_failures(client: MakeClient, standin: S3StandIn) -> None:
    key = "crds/references/roman/b.asdf"
    with pytest.raises(ClientError) as bad_secret:
        client(secret="not-the-secret").get_object(Bucket=PRIVATE, Key=key)
    status, code, _ = error_of(bad_secret)
    assert (status, code) == (403, "SignatureDoesNotMatch")
    assert "CanonicalRequest" in bad_secret.value.response["Error"]

    with pytest.raises(ClientError) as unknown:
        client(key="AKIAUNKNOWN").get_object(Bucket=PRIVATE, Key=key)
    assert error_of(unknown)[:2] == (403, "InvalidAccessKeyId")

    standin.add_credentials("ASIATEMPORARY", "temporary-secret", token="the-token")
    temporary = client(key="ASIATEMPORARY", secret="temporary-secret")
    with pytest.raises(ClientError) as no_token:
        temporary.get_object(Bucket=PRIVATE, Key=key)
    assert error_of(no_token)[:2] == (403, "InvalidToken")
    with_token = client(key="ASIATEMPORARY", secret="temporary-secret", token="the-token")
    assert with_token.get_object(Bucket=PRIVATE, Key=key)["Body"].read() == DATA[:100]
    standin.expire("ASIATEMPORARY")
    with pytest.raises(ClientError) as expired:
        with_token.get_object(Bucket=PRIVATE, Key=key)
    assert error_of(expired) == (400, "ExpiredToken", "The provided token has expired.")

    standin.skew = 16 * 60
    with pytest.raises(ClientError) as skewed:
        client().get_object(Bucket=PRIVATE, Key=key)
    assert error_of(skewed) == (
        403,
        "RequestTimeTooSkewed",
        "The difference between the request time and the current time is too large.",
    )


def test_throttling_answers_slowdown(client: MakeClient, standin: S3StandIn) -> None:
    s3 = client()
    key = "crds/references/roman/b.asdf"
    standin.throttle(1, retry_after=2)
    with pytest.raises(ClientError) as slow:
        s3.get_object(Bucket=PRIVATE, Key=key)
    assert error_of(slow) == (503, "SlowDown", "Please reduce your request rate.")
    assert slow.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "2"
    assert s3.get_object(Bucket=PRIVATE, Key=key)["Body"].read() == DATA[:100]


def test_proxy_refuses_other_hosts_and_wants_its_password(
    client: MakeClient, standin: S3StandIn, proxy: ConnectProxy
) -> None:
    def ask(port: int, request: bytes) -> tuple[int, dict[str, str]]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(request)
            answer = http.client.HTTPResponse(raw, method="CONNECT")
            answer.begin()
            return answer.status, dict(answer.getheaders())

    connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    assert ask(proxy.port, connect)[0] == 403
    plain = b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
    assert ask(proxy.port, plain)[0] == 405
    assert proxy.connects == [("example.com:443", 403)]

    with ConnectProxy(standin.port, auth=("user", "pass")) as guarded:
        status, headers = ask(
            guarded.port, b"CONNECT s3.amazonaws.com:443 HTTP/1.1\r\nHost: s3\r\n\r\n"
        )
        assert (status, headers["Proxy-Authenticate"]) == (407, 'Basic realm="test"')
        url = guarded.url.replace("http://", "http://user:pass@")
        assert client(proxy_url=url).head_bucket(Bucket=PRIVATE)
        assert guarded.connects == [
            ("s3.amazonaws.com:443", 407),
            (f"{PRIVATE}.s3.amazonaws.com:443", 200),
        ]
        credentials = base64.b64encode(b"user:pass").decode()
        good = f"CONNECT s3.amazonaws.com:443 HTTP/1.1\r\nProxy-Authorization: Basic {credentials}"
        assert ask(guarded.port, good.encode() + b"\r\n\r\n")[0] == 200

    with ConnectProxy(standin.port, refuse_all=True) as closed:
        assert ask(closed.port, b"CONNECT s3.amazonaws.com:443 HTTP/1.1\r\n\r\n")[0] == 403


def test_tls_needs_the_test_ca(client: MakeClient, standin: S3StandIn, certs: Certificates) -> None:
    def handshake(context: ssl.SSLContext) -> None:
        with (
            socket.create_connection(("127.0.0.1", standin.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=f"{PRIVATE}.s3.amazonaws.com"),
        ):
            pass

    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ssl.create_default_context())  # the machine's trust store only
    handshake(ssl.create_default_context(cafile=str(certs.ca)))

    started = time.monotonic()
    with pytest.raises(SSLError):
        client(verify=True).head_bucket(Bucket=PRIVATE)  # certifi's bundle
    assert time.monotonic() - started < 5


def test_certificates_are_made_once(tmp_path: Path) -> None:
    made = make_certificates(tmp_path)
    assert make_certificates(tmp_path) is made
    assert made.ca.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
