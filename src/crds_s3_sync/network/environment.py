"""botocore's answers, read straight from the environment, for the configurations
simple enough that they are known without botocore.

Importing botocore (with aiobotocore and aiohttp) and building its first client
took about 0.7 s of CPU here: most of a re-run with nothing to do, and all of
the wait before the first GET. Most runs (CI jobs, a public bucket, keys in
environment variables) are configured by a handful of variables whose meaning
is fixed; for them this module answers as botocore would. Anything else (an AWS
config or credentials file, a profile, an endpoint, FIPS or dual-stack set in
the environment, credentials only botocore can find, a bucket name or region
outside the plain AWS partition) gets None, and botocore decides
(`addressing`). A test holds the two to the same answers.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

from ..errors import SetupError
from .connection import Keys, Located, Trust, proxy_of
from .location import PUBLIC_BUCKETS, Endpoint

# The variables whose meaning is read here; any other AWS_* one may change the answer.
KNOWN = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CA_BUNDLE",
        "AWS_EC2_METADATA_DISABLED",
        "AWS_CONFIG_FILE",  # only where it is: it must not exist
        "AWS_SHARED_CREDENTIALS_FILE",
    }
)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")  # a host name label: no dots
_REGION = re.compile(r"(us|eu|ap|ca|sa|me|af|il|mx)-[a-z]+-\d{1,2}")  # partition "aws"


class Plain:
    """Where buckets are and what GETs are signed with, as botocore would say for
    this environment; a bucket's region, once S3 has named it, is remembered."""

    def __init__(self, endpoint: Endpoint, credentials: Keys | None, found: bool) -> None:
        self._url = endpoint.url
        self.credentials = credentials
        self.signed, self.found = credentials is not None, found
        self.region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self.region = self.region or "us-east-1"
        bundle = os.environ.get("AWS_CA_BUNDLE") or os.environ.get("REQUESTS_CA_BUNDLE")
        self.trust = Trust(bundle, custom=bool(bundle))
        self._regions: dict[str, str] = {}
        # (bucket, region) -> the answer: proxies are looked up in the environment once
        self._located: dict[tuple[str, str], Located | None] = {}

    async def locate(self, bucket: str) -> Located:
        region = self._regions.get(bucket, self.region)
        if (bucket, region) not in self._located:
            self._located[(bucket, region)] = self.located(bucket, region)
        located = self._located[(bucket, region)]
        if located is None:  # a region S3 named that is outside the plain partition
            raise SetupError(
                f"s3://{bucket} is in {region}, outside AWS's standard partition:"
                f" set AWS_REGION={region}"
            )
        return located

    def located(self, bucket: str, region: str) -> Located | None:
        """`bucket`'s base URL in `region` and the proxy to it; None if botocore's
        rules are needed to spell it (see `plain`)."""
        if self._url is not None:
            client = self._url.rstrip("/")
            base = f"{client}/{bucket}/"
        elif _REGION.fullmatch(region) and _BUCKET.fullmatch(bucket):
            host = "s3.amazonaws.com" if region == "us-east-1" else f"s3.{region}.amazonaws.com"
            client, base = f"https://{host}", f"https://{bucket}.{host}/"
        else:
            return None
        # botocore decides once per client endpoint, bypassing by NO_PROXY's rules
        parts = urlsplit(client)
        proxies = {} if proxy_bypass(parts.netloc) else getproxies()
        return Located(base, region, proxy_of(proxies.get(parts.scheme)), self.credentials)

    def learn(self, bucket: str, region: str) -> None:
        """S3 says `bucket` is in `region`."""
        self._regions[bucket] = region

    async def renew(self, expired: object) -> bool:
        """Keys from the environment cannot be renewed."""
        return False


def plain(endpoint: Endpoint) -> Plain | None:
    """The environment's answers, if it is one this module can read (see above)."""
    if any(name.startswith("AWS_") and name not in KNOWN for name in os.environ):
        return None
    home = Path.home() / ".aws"
    config = os.environ.get("AWS_CONFIG_FILE") or home / "config"
    keys = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or home / "credentials"
    if os.path.exists(Path(config).expanduser()) or os.path.exists(Path(keys).expanduser()):
        return None  # (one this user may not look at is one botocore cannot read either)
    if endpoint.url is not None:
        parts = urlsplit(endpoint.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            return None  # botocore's rules, or botocore's message
    credentials, looked = None, not (endpoint.unsigned or endpoint.bucket in PUBLIC_BUCKETS)
    if looked:
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            credentials = Keys(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
        elif key or secret or os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() != "true":
            return None  # half a key pair to complain about, or an instance to ask
    resolved = Plain(endpoint, credentials, found=credentials is not None or not looked)
    return resolved if resolved.located(endpoint.bucket, resolved.region) is not None else None
