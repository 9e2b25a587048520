"""A pytest conftest that warms a CRDS cache once per test session.

Copy it into your test suite as `conftest.py` (or import the fixture from it).
The cache lives in CRDS_S3_SYNC_CACHE, default `.crds-cache` under the suite's
root; point your CI's cache step at that directory, keyed by the line the
`crds-s3-sync --print-key` command prints for the same selection, and the
warm-up costs one small request when the cache was restored.

Settings come from the environment as for the command: CRDS_OBSERVATORY,
CRDS_CONTEXT (default: the operational context), CRDS_S3_BUCKET,
AWS_ENDPOINT_URL and so on.
"""

import os
from pathlib import Path

import pytest

import crds_s3_sync


@pytest.fixture(scope="session")
def crds_cache(request: pytest.FixtureRequest) -> Path:
    """A synced cache, and crds configured to read it offline for the whole session."""
    root = Path(request.config.rootpath)
    cache = Path(os.environ.get("CRDS_S3_SYNC_CACHE", root / ".crds-cache"))
    result = crds_s3_sync.sync(cache=cache)
    patch = pytest.MonkeyPatch()
    for name, value in result.environment.items():
        patch.setenv(name, value)
    yield cache
    patch.undo()
