"""Where to sync from and to: presets, CRDS's environment variables, and flags.

Flags override environment variables, which override presets, so a shell set
up by `source crds_s3_set roman ops` needs no flags at all. The result is one
frozen `Settings` value the other stages read and never change.
"""

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from ..cache.crds_config import cached_layout
from ..errors import SyncError
from ..network.location import Address, Endpoint, Location, Place
from ..rules.layout import Layout
from ..rules.names import check_name
from ..rules.plans import SERVER_CONFIG
from .sources import server_of


class Env(StrEnum):
    ops = "ops"
    test = "test"
    int = "int"


# (observatory, environment) -> (bucket, prefix), as crds_s3_set sets them.
PRESETS: dict[tuple[str, str], tuple[str, str]] = {
    ("hst", "ops"): ("hst-crds-cache-ops", ""),
    ("hst", "test"): ("hst-crds-cache-test", ""),
    ("roman", "ops"): ("stpubdata", "roman/crds"),
    ("roman", "test"): ("stpubdata-tst", "roman/crds/test"),
    ("roman", "int"): ("stpubdata-tst", "roman/crds/int"),
}
DEFAULT_CACHE = Path("/tmp/crds_cache")  # where crds_s3_set puts it
DEFAULT_OBSERVATORY = "roman"  # crds_s3_set's default too


@dataclass(frozen=True)
class Settings:
    observatory: str  # "" until a server says, when nothing named it
    config: Place
    mappings: Place
    references: Place
    pickles: Place  # HST: one pickle per context, in place of mapping files
    endpoint_url: str | None
    unsigned: bool | None  # None: decide from the bucket and the credentials found
    cache: Path
    cache_is_default: bool
    layout: Layout
    use_pickles: bool = False  # walk contexts from pickles even if mappings exist
    server: str | None = None  # a CRDS server's URL: the source in place of S3
    layout_given: bool = True  # a server's run: by a flag or the environment, not the cache

    @property
    def endpoint(self) -> Endpoint:
        assert isinstance(self.config, Location), "S3's endpoint, asked of a server's run"
        return Endpoint(self.config.bucket, self.endpoint_url, self.unsigned)

    @property
    def config_where(self) -> str:
        """Where server_config comes from, as messages name it."""
        if self.server:
            return f"{self.server} (get_server_info)"
        return self.config.url(SERVER_CONFIG)

    def answered(self, observatory: str, mapping_url: str, reference_url: str) -> "Settings":
        """These settings once the server has said what it serves and where."""
        where = self.config_where
        if not observatory.isalpha():
            raise SyncError(f"{where}: observatory {observatory!r} is no observatory's name")
        check_name(observatory, where)
        if self.observatory and observatory != self.observatory:
            raise SyncError(
                f"{self.server} serves {observatory!r}, not {self.observatory!r}:"
                " check --observatory and --server"
            )
        layout = self.layout
        if not self.layout_given:  # as crds does: the cache keeps the layout it has
            layout = _layout(cached_layout(self.cache, observatory) or Layout.flat, self.cache)
        return replace(
            self,
            observatory=observatory,
            mappings=Address(mapping_url),
            references=Address(reference_url),
            layout=layout,
        )


def resolve_settings(
    *,
    observatory: str | None = None,
    env: Env | None = None,
    bucket: str | None = None,
    prefix: str | None = None,
    endpoint_url: str | None = None,
    no_sign_request: bool = False,
    cache: Path | None = None,
    layout: Layout | None = None,
    pickles: bool = False,
    contexts: Sequence[str] = (),
    server: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """Combine flags (the keyword arguments) with `environ` and the presets. The
    observatory, when neither given nor in the environment, is the one the
    contexts' names start with, as in crds; from a server, else the one it serves."""
    uris = {
        kind: _parse_s3_uri(environ[var], var)
        for kind, var in (
            ("config", "CRDS_CONFIG_URI"),
            ("mappings", "CRDS_MAPPING_URI"),
            ("references", "CRDS_REFERENCE_URI"),
            ("pickles", "CRDS_PICKLE_URI"),
        )
        if environ.get(var)
    }
    named = (
        observatory
        or environ.get("CRDS_OBSERVATORY")
        or _obs_from_uris(uris)
        or _obs_from_names(contexts)
    )
    source_flags = bucket is not None or prefix is not None or env is not None
    url = server_of(
        server=server,
        s3_flags=source_flags or endpoint_url is not None,
        observatory=(named or DEFAULT_OBSERVATORY).lower(),
        environ=environ,
    )
    obs = (named or ("" if url else DEFAULT_OBSERVATORY)).lower()
    cache_dir = cache or (Path(environ["CRDS_PATH"]) if environ.get("CRDS_PATH") else None)
    resolved_cache = (cache_dir or DEFAULT_CACHE).expanduser().absolute()
    # As crds does: a cache keeps the layout it has unless told otherwise.
    asked = layout or environ.get("CRDS_REF_SUBDIR_MODE")
    mode = asked or (cached_layout(resolved_cache, obs) if obs else None) or Layout.flat
    layout = _layout(mode, "CRDS_REF_SUBDIR_MODE" if asked else resolved_cache)
    if url:
        here = Address(url)  # until the server says where its files are
        return Settings(
            observatory=obs,
            config=here,
            mappings=here,
            references=here,
            pickles=here,
            endpoint_url=None,
            unsigned=None,
            cache=resolved_cache,
            cache_is_default=cache_dir is None,
            layout=layout,
            server=url,
            layout_given=bool(asked),
        )
    if source_flags:
        uris = {}  # a source named on the command line beats the shell's URIs
    bucket = bucket or (None if env else environ.get("CRDS_S3_BUCKET"))
    if prefix is None and not env:
        prefix = environ.get("CRDS_S3_PREFIX")
    if not bucket and uris:
        bucket = next(iter(uris.values())).bucket
    if not bucket:
        preset = PRESETS.get((obs, (env or Env.ops).value))
        if preset is None:
            known = ", ".join(f"{o} {e}" for o, e in PRESETS)
            raise SyncError(
                f"no S3 bucket known for {obs} {(env or Env.ops).value}: "
                f"give --bucket (presets: {known})"
            )
        bucket, preset_prefix = preset
        prefix = preset_prefix if prefix is None else prefix
    base = (prefix or "").strip("/")

    def location(kind: str) -> Location:
        return uris.get(kind) or Location(bucket, "/".join(p for p in (base, kind, obs) if p))

    return Settings(
        observatory=obs,
        config=location("config"),
        mappings=location("mappings"),
        references=location("references"),
        pickles=location("pickles"),
        endpoint_url=endpoint_url or environ.get("AWS_ENDPOINT_URL") or None,
        unsigned=True if no_sign_request else None,
        cache=resolved_cache,
        cache_is_default=cache_dir is None,
        layout=layout,
        use_pickles=pickles or _env_bool(environ, "CRDS_USE_PICKLED_CONTEXTS"),
    )


def _layout(mode: str, where: object) -> Layout:
    """A layout this tool writes: crds's older "legacy" is not one."""
    if mode not in Layout.__members__:
        raise SyncError(f"{where}: reference layout {mode!r}: expected 'flat' or 'instrument'")
    return Layout(mode)


def _env_bool(environ: Mapping[str, str], var: str) -> bool:
    """A boolean variable read as crds reads it (crds.core.config.env_str_to_bool)."""
    value = environ.get(var, "")
    if value in ("", "False", "false", "FALSE", "F", "f", "0"):
        return False
    if value in ("True", "true", "TRUE", "T", "t", "1"):
        return True
    raise SyncError(f"{var}={value!r}: expected true or false (1 or 0)")


def _parse_s3_uri(uri: str, var: str) -> Location:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise SyncError(f"{var}={uri!r}: expected s3://BUCKET/PREFIX")
    return Location(parts.netloc, parts.path.strip("/"))


def _obs_from_names(contexts: Sequence[str]) -> str | None:
    """`jwst` for jwst_0541.pmap or jwst_nirspec_0192.imap, if every name agrees."""
    known = {o for o, _ in PRESETS} | {"jwst"}
    found = {re.split("[_-]", name, maxsplit=1)[0].lower() for name in contexts}
    return found.pop() if len(found) == 1 and found <= known else None


def _obs_from_uris(uris: dict[str, Location]) -> str | None:
    """crds_s3_set's URIs end in /<observatory>."""
    for loc in uris.values():
        return loc.prefix.rsplit("/", 1)[-1] or None
    return None
