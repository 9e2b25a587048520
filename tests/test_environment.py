"""The environment's plain answers (`network.environment`) are botocore's answers:
for every configuration it claims to read, the same URL, region, proxy, trust and
keys as botocore decides; every other configuration is left to botocore."""

from contextlib import AsyncExitStack

import pytest

from crds_s3_sync.network.addressing import open_addresses
from crds_s3_sync.network.environment import plain
from crds_s3_sync.network.location import Endpoint

KEYS = {"AWS_ACCESS_KEY_ID": "AKIDPLAIN", "AWS_SECRET_ACCESS_KEY": "plain-secret"}
NO_KEYS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}

READ_HERE = {
    "anonymous, custom endpoint": (Endpoint("bench", "http://127.0.0.1:9000", True), {}),
    "keys, custom endpoint, region": (
        Endpoint("bench", "https://s3.example.org:8443/"),
        {"AWS_REGION": "us-west-2"},
    ),
    "keys on AWS, us-east-1": (Endpoint("bench-data"), {}),
    "session token, AWS_DEFAULT_REGION, a proxy": (
        Endpoint("bench-data"),
        {
            "AWS_SESSION_TOKEN": "token-1",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "HTTPS_PROXY": "http://user:pw@proxy.example.org:3128",
        },
    ),
    "AWS_REGION over AWS_DEFAULT_REGION, proxy without a scheme": (
        Endpoint("bench-data"),
        {"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "eu-west-1", "HTTPS_PROXY": "p:8080"},
    ),
    "NO_PROXY covers S3": (
        Endpoint("bench-data"),
        {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".amazonaws.com,localhost"},
    ),
    "HTTP proxy for an http endpoint": (
        Endpoint("bench", "http://minio.internal:9000"),
        {"HTTP_PROXY": "http://proxy:3128", "HTTPS_PROXY": "http://other:3128"},
    ),
    "no keys to be found: anonymous": (Endpoint("bench-data"), NO_KEYS),
    "the public bucket": (Endpoint("stpubdata"), {"AWS_REGION": "us-east-1"}),
    "AWS_CA_BUNDLE": (Endpoint("bench-data"), {"AWS_CA_BUNDLE": "BUNDLE"}),
    "REQUESTS_CA_BUNDLE": (Endpoint("bench-data"), {"REQUESTS_CA_BUNDLE": "BUNDLE"}),
}

LEFT_TO_BOTOCORE = {
    "a profile": (Endpoint("bench-data"), {"AWS_PROFILE": "science"}),
    "a config file": (Endpoint("bench-data"), {"AWS_CONFIG_FILE": "CONFIG"}),
    "FIPS": (Endpoint("bench-data"), {"AWS_USE_FIPS_ENDPOINT": "true"}),
    "an endpoint in the environment": (Endpoint("b"), {"AWS_ENDPOINT_URL": "http://x:1"}),
    "a dotted bucket": (Endpoint("bench.data"), {}),
    "another partition": (Endpoint("bench-data"), {"AWS_REGION": "cn-north-1"}),
    "an endpoint with a path": (Endpoint("bench", "http://gateway:80/s3"), {}),
    "half a key pair": (Endpoint("bench-data"), {"AWS_SECRET_ACCESS_KEY": None}),
    "an instance to ask for keys": (
        Endpoint("bench-data"),
        {**NO_KEYS, "AWS_EC2_METADATA_DISABLED": None},
    ),
}


def _set(monkeypatch: pytest.MonkeyPatch, tmp_path, settings: dict[str, str | None]) -> None:
    for name, value in settings.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
            continue
        if value in ("BUNDLE", "CONFIG"):
            path = tmp_path / value.lower()
            path.write_text("[default]\n" if value == "CONFIG" else "not read here\n")
            value = str(path)
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("endpoint, settings", READ_HERE.values(), ids=READ_HERE.keys())
async def test_the_same_answers_as_botocore(endpoint, settings, monkeypatch, tmp_path) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    _set(monkeypatch, tmp_path, settings)
    ours = plain(endpoint)
    assert ours is not None
    async with AsyncExitStack() as stack:
        botocore = await open_addresses(endpoint, 8, 30.0, stack)
        theirs = await botocore.locate(endpoint.bucket)
        mine = await ours.locate(endpoint.bucket)
        assert mine._replace(credentials=None) == theirs._replace(credentials=None)
        if theirs.credentials is None:
            assert mine.credentials is None
        else:
            frozen = theirs.credentials
            assert mine.credentials == (frozen.access_key, frozen.secret_key, frozen.token)
        if theirs.proxy is not None:  # the credentials a proxy is reached with, too
            assert mine.proxy.with_credentials == theirs.proxy.with_credentials
        assert (ours.trust, ours.signed, ours.found) == (
            botocore.trust,
            botocore.signed,
            botocore.found,
        )


@pytest.mark.parametrize(
    "endpoint, settings", LEFT_TO_BOTOCORE.values(), ids=LEFT_TO_BOTOCORE.keys()
)
def test_other_configurations_are_botocore_s(endpoint, settings, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    _set(monkeypatch, tmp_path, settings)
    assert plain(endpoint) is None
