"""Settings: presets, CRDS's environment variables as crds_s3_set exports them, flags on top."""

from pathlib import Path

import pytest

from crds_s3_sync.errors import SyncError
from crds_s3_sync.settings import Env, Layout, resolve_settings

CRDS_S3_SET_ROMAN_OPS = {  # what `source crds_s3_set roman ops` exports
    "CRDS_PATH": "/data/crds",
    "CRDS_OBSERVATORY": "roman",
    "CRDS_S3_BUCKET": "stpubdata",
    "CRDS_S3_PREFIX": "/roman/crds",
    "CRDS_MAPPING_URI": "s3://stpubdata/roman/crds/mappings/roman",
    "CRDS_REFERENCE_URI": "s3://stpubdata/roman/crds/references/roman",
    "CRDS_CONFIG_URI": "s3://stpubdata/roman/crds/config/roman",
    "CRDS_REF_SUBDIR_MODE": "flat",
}


@pytest.mark.parametrize(
    ("observatory", "env", "bucket", "config_key"),
    [
        ("roman", Env.ops, "stpubdata", "roman/crds/config/roman/server_config"),
        ("roman", Env.test, "stpubdata-tst", "roman/crds/test/config/roman/server_config"),
        ("roman", Env.int, "stpubdata-tst", "roman/crds/int/config/roman/server_config"),
        ("hst", Env.ops, "hst-crds-cache-ops", "config/hst/server_config"),
        ("hst", Env.test, "hst-crds-cache-test", "config/hst/server_config"),
    ],
)
def test_presets(observatory: str, env: Env, bucket: str, config_key: str) -> None:
    settings = resolve_settings(observatory=observatory, env=env, environ={})
    assert settings.config.bucket == settings.references.bucket == bucket
    assert settings.config.key("server_config") == config_key
    assert settings.references.key("x.fits").endswith(f"references/{observatory}/x.fits")


def test_crds_s3_set_environment_needs_no_flags() -> None:
    settings = resolve_settings(environ=CRDS_S3_SET_ROMAN_OPS)
    preset = resolve_settings(
        observatory="roman", env=Env.ops, cache=Path("/data/crds"), environ={}
    )
    assert settings == preset
    assert not settings.cache_is_default


def test_uris_alone_are_enough() -> None:
    environ = {
        "CRDS_CONFIG_URI": "s3://mirror/x/config/jwst",
        "CRDS_MAPPING_URI": "s3://mirror/x/mappings/jwst",
        "CRDS_REFERENCE_URI": "s3://mirror/y/refs/jwst",
    }
    settings = resolve_settings(environ=environ)
    assert settings.observatory == "jwst"
    assert str(settings.references) == "s3://mirror/y/refs/jwst"
    assert settings.mappings.key("a.pmap") == "x/mappings/jwst/a.pmap"


def test_flags_beat_environment() -> None:
    settings = resolve_settings(
        bucket="other",
        prefix="p",
        cache=Path("/c"),
        layout=Layout.instrument,
        environ=CRDS_S3_SET_ROMAN_OPS,
    )
    assert settings.config.bucket == "other"
    assert settings.config.key("server_config") == "p/config/roman/server_config"
    assert settings.cache == Path("/c")
    assert settings.layout is Layout.instrument


def test_default_cache_is_crds_s3_sets() -> None:
    settings = resolve_settings(environ={})
    assert settings.cache == Path("/tmp/crds_cache") and settings.cache_is_default
    assert (settings.observatory, settings.config.bucket) == ("roman", "stpubdata")


@pytest.mark.parametrize(
    ("kwargs", "environ", "message"),
    [
        ({"observatory": "jwst"}, {}, "no S3 bucket known for jwst"),
        ({}, {"CRDS_REF_SUBDIR_MODE": "legacy"}, "CRDS_REF_SUBDIR_MODE"),
        ({}, {"CRDS_CONFIG_URI": "https://x/config/roman"}, "CRDS_CONFIG_URI"),
    ],
)
def test_bad_settings(kwargs: dict, environ: dict, message: str) -> None:
    with pytest.raises(SyncError, match=message):
        resolve_settings(**kwargs, environ=environ)
