"""What a sync does with a cache that already holds files, and the cache it leaves."""

import json
import pprint
from pathlib import Path

import pytest
from conftest import Bucket, overwrite_unseen

from crds_s3_sync.demo import encode_metadata
from crds_s3_sync.rules.server_config import decode_download_metadata, parse_server_config

DARK = "roman_wfi_dark_0001.asdf"


def sync(cli, bucket: Bucket, cache: Path, *extra: str, env: dict | None = None) -> dict:
    result = cli(*bucket.args(), "--cache", cache, "--json", "-q", *extra, env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def bucket_config(s3, bucket: Bucket) -> bytes:
    key = f"{bucket.prefix}/config/{bucket.observatory}/server_config"
    return s3.get_object(Bucket=bucket.name, Key=key)["Body"].read()


@pytest.fixture
def synced(make_bucket, cli, tmp_path: Path) -> tuple[Bucket, Path, Path]:
    """A synced Roman cache: the bucket, the cache, and the cached DARK reference."""
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    sync(cli, bucket, cache, "--all")
    return bucket, cache, cache / "references/roman" / DARK


def test_a_file_rewritten_in_place_with_its_size_is_fetched_again(cli, synced) -> None:
    bucket, cache, local = synced
    local.write_bytes(b"\0" * local.stat().st_size)

    assert sync(cli, bucket, cache, "--all")["downloaded"] == 1  # changed since verified
    assert local.read_bytes() == bucket.references[DARK]


def test_corruption_that_kept_its_times_is_kept_without_verify_and_fixed_with_it(
    cli, synced
) -> None:
    bucket, cache, local = synced
    overwrite_unseen(local, b"\0" * local.stat().st_size)

    assert sync(cli, bucket, cache, "--all")["downloaded"] == 0  # size and record match
    report = sync(cli, bucket, cache, "--all", "--verify")
    assert report["downloaded"] == 1
    assert local.read_bytes() == bucket.references[DARK]


def test_wrong_size_is_replaced(cli, synced) -> None:
    bucket, cache, local = synced
    local.write_bytes(b"short")
    assert sync(cli, bucket, cache, "--all")["downloaded"] == 1
    assert local.read_bytes() == bucket.references[DARK]


def test_a_file_without_metadata_is_checked_by_size_and_reported(
    make_bucket, cli, s3, tmp_path: Path
) -> None:
    bucket = make_bucket("roman")
    config = parse_server_config(bucket_config(s3, bucket).decode(), "test").raw
    metadata = decode_download_metadata(config["download_metadata"], "test")
    del metadata[DARK]
    config["download_metadata"] = encode_metadata(
        {n: (m.size, m.sha1) for n, m in metadata.items()}
    )
    s3.put_object(
        Bucket=bucket.name,
        Key="crds/config/roman/server_config",
        Body=pprint.pformat(config).encode(),
    )
    cache = tmp_path / "cache"
    report = sync(cli, bucket, cache, "--all")
    assert report["unverified"] == [DARK]
    assert (cache / "references/roman" / DARK).read_bytes() == bucket.references[DARK]
    plan = sync(cli, bucket, tmp_path / "other", "--all", "--dry-run")["plan"]
    assert next(p for p in plan if p["name"] == DARK)["sha1"] is None


def test_mappings_only(make_bucket, cli, tmp_path: Path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    report = sync(cli, bucket, cache, "--all", "--mappings-only")
    assert report["files"] == 19 + 1  # all Roman mappings and server_config
    assert not (cache / "references").exists()
    assert len(list((cache / "mappings/roman").iterdir())) == 19


def test_instrument_layout(make_bucket, cli, tmp_path: Path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    sync(cli, bucket, cache, "--all", "--layout", "instrument")
    assert (cache / "references/roman/wfi" / DARK).is_file()
    assert not (cache / "references/roman" / DARK).exists()
    assert (cache / "config/roman/ref_cache_subdir_mode").read_text() == "instrument"


def test_config_files_are_written_as_crds_writes_them(make_bucket, cli, s3, tmp_path) -> None:
    bucket = make_bucket(
        "jwst", mappings=["jwst_0541.pmap", "jwst_system_0018.imap", "jwst_system_calver_0019.rmap"]
    )
    cache = tmp_path / "cache"
    sync(cli, bucket, cache, "--context", "jwst_system_calver_0019.rmap")
    config_dir = cache / "config/jwst"
    assert (config_dir / "server_config").read_bytes() == bucket_config(s3, bucket)
    expected_bad = parse_server_config(bucket_config(s3, bucket).decode(), "t").bad_files
    assert len(expected_bad) > 10  # the real JWST list
    assert (config_dir / "bad_files.txt").read_text() == "\n".join(expected_bad)
    assert (config_dir / "ref_cache_subdir_mode").read_text() == "flat"


def test_selection_by_environment_and_last(make_bucket, cli, tmp_path: Path) -> None:
    bucket = make_bucket("roman")
    by_env = sync(cli, bucket, tmp_path / "a", "--dry-run", env={"CRDS_CONTEXT": "roman_0003.pmap"})
    assert by_env["contexts"] == ["roman_0003.pmap"]
    default = sync(cli, bucket, tmp_path / "a", "--dry-run")
    assert default["contexts"] == ["roman_0004.pmap"]  # server_config's operational_context
    # roman_0006 and roman_0007 are missing from server_config's list but are in the bucket.
    assert sync(cli, bucket, tmp_path / "a", "--last", "2", "--dry-run")["contexts"] == [
        "roman_0006.pmap",
        "roman_0007.pmap",
    ]
    symbolic = sync(cli, bucket, tmp_path / "a", "--context", "roman-edit", "--dry-run")
    assert symbolic["contexts"] == ["roman_0005.pmap"]  # server_config's edit_context
    assert not (tmp_path / "a").exists()
