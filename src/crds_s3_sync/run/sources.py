"""Which source a run fills the cache from: an S3 bucket or a CRDS server.

In order: the flags (`--server`; or `--bucket`, `--prefix`, `--env`), then the
shell: any CRDS_S3_* setting, an s3:// CRDS_*_URI (crds_s3_set's), CRDS_MODE=s3,
or a CRDS_SERVER_URL naming crds's serverless S3 mode (`...-crds-serverless...`,
as this tool's own printed environment has it) mean S3; any other CRDS_SERVER_URL,
as crds users have it set, means that server. Otherwise the observatory's default:
Roman's public bucket, and for JWST and HST, which have no public bucket, their
public CRDS servers.
"""

from collections.abc import Mapping

from ..errors import SyncError
from ..network.crds_rpc import checked_url

SERVERS = {"jwst": "https://jwst-crds.stsci.edu", "hst": "https://hst-crds.stsci.edu"}
S3_URIS = ("CRDS_CONFIG_URI", "CRDS_MAPPING_URI", "CRDS_REFERENCE_URI", "CRDS_PICKLE_URI")


def server_of(
    *,
    server: str | None,
    s3_flags: bool,
    observatory: str | None,
    environ: Mapping[str, str],
) -> str | None:
    """The CRDS server's URL the run syncs from, or None for S3."""
    if server and s3_flags:
        raise SyncError(
            "--server and --bucket/--prefix/--env/--endpoint-url name two sources: give one"
        )
    if server:
        return checked_url(server, "--server")
    if s3_flags or _s3_shell(environ):
        return None
    url = environ.get("CRDS_SERVER_URL", "")
    if url and not _serverless(url):
        return checked_url(url, "CRDS_SERVER_URL")
    if url:
        return None
    return SERVERS.get(observatory or "")


def _s3_shell(environ: Mapping[str, str]) -> bool:
    """A shell set up for crds's S3 mode (crds_s3_set, or by hand)."""
    return (
        any(name.startswith("CRDS_S3_") and value for name, value in environ.items())
        or any(environ.get(name, "").startswith("s3://") for name in S3_URIS)
        or environ.get("CRDS_MODE", "").lower() == "s3"
    )


def _serverless(url: str) -> bool:
    """crds's word for "no server": its S3 mode's URLs say so."""
    return "serverless" in url or "server-less" in url
