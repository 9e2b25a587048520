"""Whole syncs through the CLI against the local S3 server."""

import hashlib
import json
from pathlib import Path

from conftest import Bucket, files_under


def test_sync_roman_all_downloads_and_verifies_every_file(make_bucket, cli, tmp_path: Path):
    bucket: Bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), "--all", "--cache", cache, "--json", "--quiet")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["contexts"] == [f"roman_000{i}.pmap" for i in range(1, 8)]
    assert report["failed"] == []
    assert report["downloaded"] == report["files"]
    for name, data in bucket.references.items():
        local = cache / "references" / "roman" / name
        assert hashlib.sha1(local.read_bytes()).hexdigest() == hashlib.sha1(data).hexdigest()
    assert (cache / "config/roman/ref_cache_subdir_mode").read_text() == "flat"
    assert not [p for p in cache.rglob(".*") if p.is_file()], "temporary files left behind"

    again = json.loads(cli(*bucket.args(), "--all", "--cache", cache, "--json", "-q").stdout)
    assert again["downloaded"] == 0
    assert again["skipped"] == report["files"]


def test_dry_run_lists_the_plan_and_writes_nothing(make_bucket, cli, tmp_path: Path):
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    result = cli(
        *bucket.args(), "--context", "roman_0007.pmap", "--cache", cache, "--dry-run", "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    kinds = {entry["kind"] for entry in report["plan"]}
    assert kinds == {"config", "mapping", "reference"}
    paths = {entry["path"] for entry in report["plan"]}
    assert "mappings/roman/roman_0007.pmap" in paths
    assert "references/roman/roman_wfi_dark_0001.asdf" in paths
    assert not cache.exists()
    assert files_under(tmp_path) == set()
