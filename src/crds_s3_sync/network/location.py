"""Where objects are: a bucket and a key prefix, and the S3 endpoint a run talks to.

Names only; nothing here touches the network. CRDS's layers (rules, cache) name
where each file comes from with a `Location`.
"""

from dataclasses import dataclass

# Buckets anyone may read: requests to them are sent unsigned.
PUBLIC_BUCKETS = frozenset({"stpubdata"})


@dataclass(frozen=True)
class Location:
    """An S3 "directory": a bucket and a key prefix with no trailing slash."""

    bucket: str
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def url(self, name: str) -> str:
        """The s3:// address of `name` here, as messages name it."""
        return f"s3://{self.bucket}/{self.key(name)}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class Endpoint:
    """Which S3 a run talks to: the bucket it reads first (whose region and TLS
    settings the run's connections take), an endpoint URL if not AWS's own, and
    whether to sign (None: sign if credentials are found, unless the bucket is public)."""

    bucket: str
    url: str | None = None
    unsigned: bool | None = None


@dataclass(frozen=True)
class Address:
    """A CRDS server's directory of files: its `mapping_url` or `reference_url`."""

    base: str  # with no trailing slash

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def __str__(self) -> str:
        return self.base


# Where a file comes from: an S3 "directory" or a CRDS server's
Place = Location | Address
