"""Settings: presets, CRDS's environment variables as crds_s3_set exports them, flags on top."""

from pathlib import Path

import pytest

from crds_s3_sync.errors import SyncError
from crds_s3_sync.run.settings import Env, Layout, resolve_settings

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
        ({"observatory": "jwst", "env": Env.ops}, {}, "no S3 bucket known for jwst"),
        ({}, {"CRDS_REF_SUBDIR_MODE": "legacy"}, "CRDS_REF_SUBDIR_MODE"),
        ({}, {"CRDS_CONFIG_URI": "https://x/config/roman"}, "CRDS_CONFIG_URI"),
    ],
)
def test_bad_settings(kwargs: dict, environ: dict, message: str) -> None:
    with pytest.raises(SyncError, match=message):
        resolve_settings(**kwargs, environ=environ)


def test_hst_pickles_live_beside_the_references() -> None:
    settings = resolve_settings(observatory="hst", env=Env.ops, environ={})
    assert settings.pickles.bucket == "hst-crds-cache-ops"
    assert settings.pickles.key("hst_0729.pmap.pkl") == "pickles/hst/hst_0729.pmap.pkl"
    assert not settings.use_pickles  # decided by what the bucket holds
    moved = resolve_settings(
        observatory="hst", environ={"CRDS_PICKLE_URI": "s3://mirror/crds/pickles/hst"}
    )
    assert (moved.pickles.bucket, moved.pickles.prefix) == ("mirror", "crds/pickles/hst")


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("true", True), ("T", True), ("0", False), ("", False)]
)
def test_pickled_contexts_variable_reads_as_crds_reads_it(value: str, expected: bool) -> None:
    settings = resolve_settings(environ={"CRDS_USE_PICKLED_CONTEXTS": value})
    assert settings.use_pickles is expected
    assert resolve_settings(pickles=True, environ={}).use_pickles


def test_a_pickled_contexts_value_crds_would_refuse_is_refused() -> None:
    with pytest.raises(SyncError, match="CRDS_USE_PICKLED_CONTEXTS='maybe'"):
        resolve_settings(environ={"CRDS_USE_PICKLED_CONTEXTS": "maybe"})


def test_jwst_and_hst_default_to_their_public_servers(tmp_path: Path) -> None:
    for obs in ("jwst", "hst"):
        settings = resolve_settings(observatory=obs, cache=tmp_path, environ={})
        assert settings.server == f"https://{obs}-crds.stsci.edu"
        assert settings.observatory == obs and not settings.layout_given


def test_a_servers_observatory_and_layout_come_with_its_answer(tmp_path: Path) -> None:
    (tmp_path / "config" / "hst").mkdir(parents=True)
    (tmp_path / "config" / "hst" / "ref_cache_subdir_mode").write_text("instrument")
    settings = resolve_settings(server="https://example.org/", cache=tmp_path, environ={})
    assert (settings.server, settings.observatory) == ("https://example.org", "")
    answered = settings.answered("hst", "https://m.example.org/m", "https://r.example.org/r")
    assert answered.observatory == "hst"
    assert answered.layout is Layout.instrument  # the cache's own, as crds keeps it
    assert answered.references.url("x.fits") == "https://r.example.org/r/x.fits"
    with pytest.raises(SyncError, match="serves 'roman', not 'hst'"):
        answered.answered("roman", "https://m", "https://r")
    with pytest.raises(SyncError, match="no observatory's name"):
        settings.answered("../etc", "https://m", "https://r")


def test_a_date_context_names_its_observatory(tmp_path: Path) -> None:
    settings = resolve_settings(contexts=["jwst-2024-01-01T00:00:00"], cache=tmp_path, environ={})
    assert (settings.observatory, settings.server) == ("jwst", "https://jwst-crds.stsci.edu")
