"""The tool on a network like a user's: TLS, S3's real host names, a proxy, regions,
expiring credentials, a wrong clock, throttling; no `--endpoint-url`.

An in-memory S3 (tests/s3standin.py) answers over TLS under `*.s3.amazonaws.com`
and the regional names, with a certificate from a test CA; the only way to it is
a local CONNECT proxy that maps those names to it, so a request that ignored the
proxy, the CA bundle or the region would fail here as it fails on AWS. The
stand-in checks SigV4 signatures (botocore computes the expected ones from the
test secrets), enforces each bucket's region as S3 does and refuses expired
requests. Every test sets the environment of the run itself: this machine may
export proxy and CA-bundle variables of its own.
"""

import json
import re
import socket
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aioboto3
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from botocore import UNSIGNED
from botocore.exceptions import SSLError
from conftest import RULES, final_lines, mappings_of
from connect_proxy import ConnectProxy
from s3standin import S3StandIn
from tls_certificates import Certificates, make_certificates

from crds_s3_sync.demo import build_bucket
from crds_s3_sync.network.listing import VerifyingSession

KEY, SECRET = "AKIDSTANDIN0001", "standin-secret-0001"
# Environment variables that would steer TLS or proxies from outside the test.
STEERING = [
    "AWS_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    *(
        v
        for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        for v in (name, name.upper())
    ),
]
BIG, RANGED = 1_500_000, 3 << 20  # one body for the worker threads, one in ranged parts
SIZES = ["--multipart-threshold", "2M", "--part-size", "512K"]


class Uploader:
    """Lets demo.build_bucket fill the stand-in as it fills moto."""

    def __init__(self, s3: S3StandIn) -> None:
        self.s3 = s3

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: object) -> None:
        self.s3.put(Bucket, Key, Body)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def s3(certs: Certificates) -> Iterator[S3StandIn]:
    with S3StandIn(certs) as server:
        server.add_credentials(KEY, SECRET)
        yield server


@pytest.fixture
def proxy(s3: S3StandIn) -> Iterator[ConnectProxy]:
    with ConnectProxy(s3.port) as server:
        yield server


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch, certs: Certificates, proxy: ConnectProxy) -> None:
    """A user's shell: the proxy in HTTPS_PROXY, the CA in AWS_CA_BUNDLE, credentials."""
    for name in STEERING:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(certs.ca))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)


def fill(
    s3: S3StandIn,
    bucket: str,
    prefix: str,
    *,
    region: str = "us-east-1",
    public=False,
    sizes: dict[str, int] | None = None,
    mappings: list[str] | None = None,
) -> dict[str, bytes]:
    """A Roman bucket in the stand-in; returns the references' bytes."""
    s3.add_bucket(bucket, region, public=public)
    return build_bucket(
        Uploader(s3),
        bucket,
        prefix,
        RULES,
        "roman",
        lambda name: (sizes or {}).get(name, 700 + len(name) * 37),
        mappings=mappings,
    )


def the_references(refs: dict[str, bytes], big: int = BIG, ranged: int = RANGED) -> dict[str, int]:
    """Sizes making one reference big and one ranged."""
    first, second = sorted(refs)[:2]
    return {first: big, second: ranged}


def cached(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (cache / "references" / "roman").iterdir()}


ROMAN_WFI = mappings_of("roman", "roman_wfi_0006.imap")  # an imap, its rmaps: a few dozen files


def roman_bucket(
    s3, name="crds-private", prefix="crds", **kwargs
) -> tuple[dict[str, bytes], list[str]]:
    refs = fill(s3, name, prefix, mappings=ROMAN_WFI, **kwargs)
    sizes = the_references(refs)
    refs = fill(s3, name, prefix, mappings=ROMAN_WFI, sizes=sizes, **kwargs)
    args = [
        "--bucket",
        name,
        "--prefix",
        prefix,
        "--observatory",
        "roman",
        "--context",
        "roman_wfi_0006.imap",
        *SIZES,
    ]
    return refs, args


def test_public_bucket_anonymous_through_the_proxy(
    s3, proxy, network, cli, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    refs = fill(s3, "stpubdata", "roman/crds", public=True, mappings=ROMAN_WFI)
    refs = fill(
        s3, "stpubdata", "roman/crds", public=True, mappings=ROMAN_WFI, sizes=the_references(refs)
    )
    cache = tmp_path / "cache"
    result = cli(
        "--observatory",
        "roman",
        "--env",
        "ops",
        "--context",
        "roman_wfi_0006.imap",
        "--cache",
        cache,
        "--json",
        "-q",
        *SIZES,
    )
    assert result.exit_code == 0, result.stderr
    assert cached(cache) == refs
    assert {host for host, _ in proxy.connects} == {"stpubdata.s3.amazonaws.com:443"}
    assert s3.requests and {r.access_key for r in s3.requests} == {None}  # anonymous
    assert {r.host for r in s3.requests} == {"stpubdata.s3.amazonaws.com"}
    ranged = [r for r in s3.requests if r.status == 206]
    assert len(ranged) == RANGED // (512 << 10)  # the ranged file came in parts


@pytest.mark.parametrize(
    "regions",
    [
        {"AWS_DEFAULT_REGION": "us-west-2"},
        {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "us-west-2"},  # AWS_REGION first
    ],
    ids=["AWS_DEFAULT_REGION", "AWS_REGION"],
)
def test_signed_bucket_found_in_its_region(
    s3, proxy, network, cli, tmp_path, monkeypatch, regions
) -> None:
    """A profile in us-west-2, a bucket in us-east-1 (as HST's are): every kind of GET
    goes to the bucket's region after S3 says where it is, once."""
    for name, value in regions.items():
        monkeypatch.setenv(name, value)
    refs, args = roman_bucket(s3)
    cache = tmp_path / "cache"
    result = cli(*args, "--cache", cache, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    assert cached(cache) == refs
    assert json.loads(result.stdout)["retries"] == 0  # a redirect is not a retry
    first = s3.requests[0]
    assert first.host == "crds-private.s3.us-west-2.amazonaws.com"  # the region was read
    redirects = [r for r in s3.requests if r.status in (301, 400)]
    assert 1 <= len(redirects) <= 2, redirects  # learned once (botocore's own HEADs aside)
    served = [r for r in s3.requests if r.status in (200, 206)]
    assert {r.access_key for r in served} == {KEY}
    assert {r.region for r in served} == {"us-east-1"}
    assert {r.status for r in served} == {200, 206}


@pytest.mark.parametrize("profile", [False, True], ids=["environment", "botocore"])
def test_a_ca_bundle_that_cannot_be_read_is_one_line(
    s3, proxy, network, cli, tmp_path, monkeypatch, profile
) -> None:
    """Whichever reads the configuration (the environment alone, or botocore for a
    profile), a CA bundle that is not there ends the run before any request."""
    missing = tmp_path / "no-such-bundle.pem"
    monkeypatch.setenv("AWS_CA_BUNDLE", str(missing))
    if profile:
        config = tmp_path / "aws-config"
        config.write_text("[profile science]\nregion = us-east-1\n")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
        monkeypatch.setenv("AWS_PROFILE", "science")
    _, args = roman_bucket(s3)
    result = cli(*args, "--cache", tmp_path / "cache")
    assert result.exit_code == 2, result.stderr
    (line,) = final_lines(result.stderr)
    assert str(missing) in line and "cannot load this CA bundle" in line, line
    assert proxy.connects == []
    assert not (tmp_path / "cache").exists()


def test_untrusted_certificate_is_one_line_and_no_retries(
    s3, proxy, network, cli, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("AWS_CA_BUNDLE")  # botocore's default bundle lacks the test CA
    _, args = roman_bucket(s3)
    result = cli(*args, "--cache", tmp_path / "cache")
    assert result.exit_code == 2
    lines = final_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert (
        "certificate" in lines[0] and "AWS_CA_BUNDLE" in lines[0] and "CA bundle in use" in lines[0]
    )
    assert len(proxy.connects) == 1  # no second try
    assert not (tmp_path / "cache").exists()


def test_no_proxy_goes_direct(s3, proxy, network, cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NO_PROXY", "localhost")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"https://localhost:{s3.port}")
    refs, args = roman_bucket(s3)
    cache = tmp_path / "cache"
    result = cli(*args, "--cache", cache, "-q")
    assert result.exit_code == 0, result.stderr
    assert cached(cache) == refs
    assert proxy.connects == []
    assert {r.host for r in s3.requests} == {f"localhost:{s3.port}"}


def test_proxy_refusal_names_the_proxy(certs, s3, network, cli, tmp_path, monkeypatch) -> None:
    with ConnectProxy(s3.port, refuse_all=True) as refusing:
        monkeypatch.setenv("HTTPS_PROXY", refusing.url)
        _, args = roman_bucket(s3)
        result = cli(*args, "--cache", tmp_path / "cache")
    assert result.exit_code == 2
    assert (
        f"proxy {refusing.url} refused the tunnel to crds-private.s3.amazonaws.com" in result.stderr
    )
    assert len(final_lines(result.stderr)) == 1
    assert s3.requests == []


def test_a_proxy_that_is_not_running_ends_the_run_at_once(
    s3, network, cli, tmp_path, monkeypatch
) -> None:
    """HTTPS_PROXY naming a port nothing listens on: a setup mistake, said at once with
    the endpoint and the proxy, not retried for --retry-time."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("HTTPS_PROXY", gone)
    _, args = roman_bucket(s3)
    start = time.monotonic()
    result = cli(*args, "--cache", tmp_path / "cache")
    assert result.exit_code == 2, result.stderr
    (line,) = final_lines(result.stderr)
    assert f"through the proxy {gone}: connection refused" in line, line
    assert "crds-private.s3.amazonaws.com" in line
    assert time.monotonic() - start < 20
    assert s3.requests == []
    assert not (tmp_path / "cache").exists()


def test_credentials_rotating_during_the_sync(
    s3, proxy, network, cli, tmp_path, monkeypatch
) -> None:
    """Temporary credentials from a credential_process; the stand-in expires each
    access key after it has served a few requests, and requests in flight with it
    are refused with ExpiredToken: each is signed again with fresh credentials."""
    counter = tmp_path / "issued"
    script = tmp_path / "credentials.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 ))\n"
        f"echo $n > {counter}\n"
        'printf \'{"Version": 1, "AccessKeyId": "AKIDROT%04d", "SecretAccessKey": "rot-secret-%d",'
        ' "SessionToken": "rot-token-%d", "Expiration": "2099-01-01T00:00:00Z"}\' $n $n $n\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "aws-config"
    config.write_text(f"[profile rotating]\ncredential_process = {script}\n")
    for n in range(1, 200):
        s3.add_credentials(f"AKIDROT{n:04d}", f"rot-secret-{n}", f"rot-token-{n}")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "rotating")
    refs, args = roman_bucket(s3)
    done = threading.Event()

    def expire_keys() -> None:  # each key: expired once it has served 8 requests
        expired: set[str] = set()
        while not done.wait(0.005):
            uses = Counter(r.access_key for r in list(s3.requests) if r.status in (200, 206))
            for key, count in uses.items():
                if key and count >= 8 and key not in expired:
                    s3.expire(key)
                    expired.add(key)

    expirer = threading.Thread(target=expire_keys, daemon=True)
    expirer.start()
    cache = tmp_path / "cache"
    try:
        result = cli(*args, "--cache", cache, "--json", "-q", "--jobs", "8")
    finally:
        done.set()
        expirer.join()
    assert result.exit_code == 0, result.stderr
    assert cached(cache) == refs
    keys = {r.access_key for r in s3.requests if r.status in (200, 206)}
    assert len(keys) >= 2, keys  # rotated during the sync
    assert any(r.error == "ExpiredToken" for r in s3.requests)  # and refused in flight
    assert json.loads(result.stdout)["retries"] == 0  # a fresh signature is not a retry


def test_skewed_clock_is_named(s3, proxy, network, cli, tmp_path) -> None:
    s3.skew = 3600.0  # S3's clock an hour ahead of this machine's
    _, args = roman_bucket(s3)
    result = cli(*args, "--cache", tmp_path / "cache")
    assert result.exit_code == 2
    assert re.search(r"this machine's clock is 3[56]\d\d s behind", result.stderr), result.stderr
    assert len(final_lines(result.stderr)) == 1


def test_a_slowdown_storm_is_one_retry_each(s3, proxy, network, cli, tmp_path) -> None:
    """Each SlowDown is tried again after a back-off, counted once. (S3's Retry-After
    header does not reach the tool: its GETs' errors come through obstore without
    headers, and real S3 sends none with SlowDown; the pacer's back-off stands in.)"""
    refs, args = roman_bucket(s3)
    s3.throttle(6, retry_after=1)  # the first requests, server_config's tries among them
    cache = tmp_path / "cache"
    result = cli(*args, "--cache", cache, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    assert cached(cache) == refs
    slowed = [r for r in s3.requests if r.error == "SlowDown"]
    assert len(slowed) == 6
    assert json.loads(result.stdout)["retries"] == 6
    for refused in slowed:  # each was asked for again, once it had been refused
        again = [r for r in s3.requests if r.path == refused.path and r.time > refused.time]
        assert any(r.status in (200, 206) for r in again)


def test_no_secret_reaches_the_output(s3, certs, network, cli, tmp_path, monkeypatch) -> None:
    """A signed run, through a proxy with a password, with temporary credentials,
    where some files fail: nothing secret in anything it prints."""
    token, password = "SESSION-TOKEN-sekrit-42", "proxy-pass-sekrit-43"
    s3.add_credentials("AKIDTOKEN0001", "token-secret-sekrit-44", token)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTOKEN0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "token-secret-sekrit-44")
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    refs, args = roman_bucket(s3)
    lost = sorted(refs)[-1]
    s3.remove("crds-private", f"crds/references/roman/{lost}")
    with ConnectProxy(s3.port, auth=("user", password)) as guarded:
        monkeypatch.setenv("HTTPS_PROXY", guarded.url.replace("//", f"//user:{password}@"))
        outputs = []
        for extra in (["--json"], ["--log-format", "json"], []):
            result = cli(*args, "--cache", tmp_path / "cache", *extra)
            assert result.exit_code == 1, result.stderr
            outputs.append(result.stdout + result.stderr)
        assert guarded.connects  # the password was used
    text = "\n".join(outputs)
    assert lost in text  # the failure is reported...
    for secret in (
        token,
        password,
        "token-secret-sekrit-44",
        "X-Amz-Signature",
        "Signature=",
        "X-Amz-Credential",
    ):
        assert secret not in text  # ...and nothing secret with it


def test_dual_stack_setting_is_honoured(s3, proxy, network, cli, tmp_path, monkeypatch) -> None:
    """The GETs take botocore's endpoint rules, so AWS's own settings steer them."""
    monkeypatch.setenv("AWS_USE_DUALSTACK_ENDPOINT", "true")
    refs, args = roman_bucket(s3)
    cache = tmp_path / "cache"
    assert cli(*args, "--cache", cache, "-q").exit_code == 0
    assert cached(cache) == refs
    assert {r.host for r in s3.requests} == {"crds-private.s3.dualstack.us-east-1.amazonaws.com"}


def test_a_certificate_for_another_host_is_refused(s3, proxy, network, cli, tmp_path, monkeypatch):
    """The test CA is trusted, but its certificate does not name ap-south-1's hosts:
    a client that skipped the host-name check would sync from an impostor."""
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    _, args = roman_bucket(s3)
    result = cli(*args, "--cache", tmp_path / "cache")
    assert result.exit_code == 2, result.stderr
    assert "crds-private.s3.ap-south-1.amazonaws.com" in result.stderr
    assert "certificate" in result.stderr and "Traceback" not in result.stderr
    assert s3.requests == []


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ({"AWS_PROFILE": "nope"}, "The config profile (nope) could not be found"),
        ({"AWS_PROFILE": "failing"}, "Error when retrieving credentials from custom-process"),
    ],
    ids=["missing-profile", "failing-credential-process"],
)
def test_credential_trouble_is_one_line(s3, network, cli, tmp_path, monkeypatch, setting, says):
    config = tmp_path / "aws-config"
    config.write_text("[profile failing]\ncredential_process = sh -c 'echo denied >&2; exit 3'\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    for name, value in setting.items():
        monkeypatch.setenv(name, value)
    _, args = roman_bucket(s3)
    result = cli(*args, "--cache", tmp_path / "cache")
    assert result.exit_code == 2, result.stderr
    (line,) = final_lines(result.stderr)
    assert line.startswith("crds-s3-sync: error: AWS configuration: ") and says in line, line


async def test_listing_checks_host_names_too(s3, proxy, certs) -> None:
    """aiobotocore's own requests, made through the session class the tool gives it,
    refuse a certificate that does not name the host (aiobotocore's default accepts)."""
    s3.add_bucket("listed", "ap-south-1", public=True)
    s3.put("listed", "a-key", b"x")
    outcomes = []
    for session_class in (AIOHTTPSession, VerifyingSession):
        config = AioConfig(
            http_session_cls=session_class,
            proxies={"https": proxy.url},
            signature_version=UNSIGNED,
            retries={"total_max_attempts": 1},
        )
        async with aioboto3.Session().client(
            "s3", region_name="ap-south-1", verify=str(certs.ca), config=config
        ) as client:
            try:
                listed = await client.list_objects_v2(Bucket="listed")
                outcomes.append([item["Key"] for item in listed["Contents"]])
            except SSLError as exc:
                outcomes.append(type(exc.kwargs["error"]).__name__)
    assert outcomes == [["a-key"], "ClientConnectorCertificateError"]
