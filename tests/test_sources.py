"""Which source a run uses (run/sources.py): flags, then the shell, then the
observatory's default."""

import pytest

from crds_s3_sync.errors import SyncError
from crds_s3_sync.run.sources import server_of


def choose(server=None, s3_flags=False, observatory=None, **environ: str) -> str | None:
    return server_of(server=server, s3_flags=s3_flags, observatory=observatory, environ=environ)


def test_flags_first() -> None:
    assert (
        choose("https://jwst-crds.stsci.edu/", CRDS_S3_BUCKET="b") == "https://jwst-crds.stsci.edu"
    )
    assert choose(s3_flags=True, observatory="jwst", CRDS_SERVER_URL="https://x.org") is None
    with pytest.raises(SyncError, match="two sources"):
        choose("https://jwst-crds.stsci.edu", s3_flags=True)


@pytest.mark.parametrize(
    "environ",
    [
        {"CRDS_S3_BUCKET": "mirror"},
        {"CRDS_MODE": "s3"},
        {"CRDS_CONFIG_URI": "s3://stpubdata/roman/crds/config/roman"},
        {"CRDS_SERVER_URL": "https://jwst-crds-serverless.stsci.edu"},
    ],
)
def test_a_shell_set_up_for_s3_means_s3(environ: dict[str, str]) -> None:
    assert choose(observatory="jwst", **environ) is None


def test_a_crds_users_server_url_means_that_server() -> None:
    assert choose(observatory="roman", CRDS_SERVER_URL="https://roman-crds.stsci.edu") == (
        "https://roman-crds.stsci.edu"
    )


def test_the_observatorys_default() -> None:
    assert choose(observatory="roman") is None  # the public bucket
    assert choose(observatory="jwst") == "https://jwst-crds.stsci.edu"
    assert choose(observatory="hst") == "https://hst-crds.stsci.edu"


def test_a_server_that_is_no_url_is_said() -> None:
    with pytest.raises(SyncError, match=r"--server jwst-crds\.stsci\.edu: not an http\(s\)://"):
        choose("jwst-crds.stsci.edu")
