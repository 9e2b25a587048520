"""Large files: concurrent ranged GETs, hashed as they land, resumed after a kill."""

import hashlib
import json
import os
import signal
from pathlib import Path

from conftest import files_under, interrupt_after_parts

from crds_s3_sync.engine import ranged

FLAT = "roman_wfi_flat_0004.asdf"
PARTS = ["--part-size", "64K", "--multipart-threshold", "1M"]


def leftovers(cache: Path) -> list[str]:
    return sorted(name for name in files_under(cache) if Path(name).name.startswith("."))


def test_a_large_file_arrives_in_parts_and_verified(make_bucket, cli, tmp_path: Path) -> None:
    size = 3 * (1 << 20) + 12345  # not a multiple of the part size: a short last part
    bucket = make_bucket("roman", sizes={FLAT: size})
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), "--all", "--cache", cache, "--json", "-q", *PARTS)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["failed"] == []
    local = cache / "references/roman" / FLAT
    assert local.read_bytes() == bucket.references[FLAT]
    assert leftovers(cache) == []


def test_parts_too_big_to_hold_are_hashed_from_the_disk(
    make_bucket, cli, tmp_path: Path, monkeypatch
) -> None:
    # A part size past what is held in memory (as an explicit --part-size 1G would be):
    # the parts are read back from the disk for hashing.
    monkeypatch.setattr(ranged, "HELD_AT_MOST", 32 << 10)
    size = (2 << 20) + 999
    bucket = make_bucket("roman", sizes={FLAT: size})
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), "--all", "--cache", cache, "--json", "-q", *PARTS)
    assert result.exit_code == 0, result.stderr
    assert (cache / "references/roman" / FLAT).read_bytes() == bucket.references[FLAT]
    assert leftovers(cache) == []


def test_a_corrupt_large_object_leaves_nothing(make_bucket, cli, s3, tmp_path: Path) -> None:
    bucket = make_bucket("roman", sizes={FLAT: 2 << 20})
    data = bytearray(bucket.references[FLAT])
    data[1_500_000] ^= 0xFF
    s3.put_object(Bucket=bucket.name, Key=f"crds/references/roman/{FLAT}", Body=bytes(data))
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), "--all", "--cache", cache, "--json", "-q", *PARTS)
    assert result.exit_code == 1
    failed = json.loads(result.stdout)["failed"]
    assert [f["name"] for f in failed] == [FLAT] and "SHA-1" in failed[0]["error"]
    assert not (cache / "references/roman" / FLAT).exists()
    assert leftovers(cache) == []


def interrupted(bucket, cache: Path, parts: int, sig: signal.Signals) -> int:
    """A sync of one big file from the bucket, a part at a time, sent `sig` once
    `parts` parts are recorded done; its exit status."""
    args = [*bucket.args(), "--all", "--cache", str(cache), "--jobs", "1", "--quiet", *PARTS]
    record = cache / "references/roman" / f".{FLAT}.part.json"
    return interrupt_after_parts(args, record, parts, sig, os.environ.copy())


def test_a_killed_download_resumes_with_the_parts_it_had(make_bucket, cli, tmp_path) -> None:
    size = 24 << 20  # 384 parts of 64 KiB, fetched one at a time: slow enough to interrupt
    bucket = make_bucket("roman", sizes={FLAT: size})
    cache = tmp_path / "cache"
    assert interrupted(bucket, cache, 20, signal.SIGKILL) == -signal.SIGKILL
    assert not (cache / "references/roman" / FLAT).exists(), "a partial file under its name"

    result = cli(*bucket.args(), "--all", "--cache", cache, "--json", "-q", *PARTS)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["resumed_bytes"] >= 20 * 65536
    assert report["resumed_bytes"] < size
    local = cache / "references/roman" / FLAT
    assert (
        hashlib.sha1(local.read_bytes()).digest() == hashlib.sha1(bucket.references[FLAT]).digest()
    )
    assert leftovers(cache) == []


def test_ctrl_c_stops_at_once_and_keeps_the_parts(make_bucket, tmp_path) -> None:
    bucket = make_bucket("roman", sizes={FLAT: 24 << 20})
    cache = tmp_path / "cache"
    assert interrupted(bucket, cache, 5, signal.SIGINT) == 130
    assert not (cache / "references/roman" / FLAT).exists()
    record = cache / "references/roman" / f".{FLAT}.part.json"
    assert len(json.loads(record.read_text())["done"]) >= 5


def test_a_resumed_download_keeps_the_part_size_it_started_with(make_bucket, cli, tmp_path) -> None:
    size = 24 << 20
    bucket = make_bucket("roman", sizes={FLAT: size})
    cache = tmp_path / "cache"
    assert interrupted(bucket, cache, 20, signal.SIGKILL) == -signal.SIGKILL
    # Resumed without naming a part size (so 8 MiB): the record's 64 KiB parts are kept.
    result = cli(
        *bucket.args(), "--all", "--cache", cache, "--json", "-q", "--multipart-threshold", "1M"
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["resumed_bytes"] >= 20 * 65536
    assert (cache / "references/roman" / FLAT).read_bytes() == bucket.references[FLAT]
    assert leftovers(cache) == []


def test_a_record_of_garbage_costs_a_download_never_a_wrong_file(
    make_bucket, cli, tmp_path
) -> None:
    bucket = make_bucket("roman", sizes={FLAT: 2 << 20})
    final = tmp_path / "cache/references/roman" / FLAT
    final.parent.mkdir(parents=True)
    # A record of 128K parts said done, with garbage where the parts are.
    (final.parent / f".{FLAT}.part").write_bytes(b"\xaa" * (2 << 20))
    (final.parent / f".{FLAT}.part.json").write_text(
        json.dumps(
            {
                "size": 2 << 20,
                "sha1": hashlib.sha1(bucket.references[FLAT]).hexdigest(),
                "part_size": 128 << 10,
                "done": list(range(16)),
            }
        )
    )
    result = cli(*bucket.args(), "--all", "--cache", tmp_path / "cache", "--json", "-q", *PARTS)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["resumed_bytes"] == 0  # the resumed parts were thrown away
    assert report["retries"] >= 1
    assert final.read_bytes() == bucket.references[FLAT]
    assert leftovers(final.parent.parent.parent) == []


def test_a_mid_size_file_is_one_verified_stream(make_bucket, cli, tmp_path: Path) -> None:
    size = (3 << 20) + 7  # above the in-memory limit, below the ranged threshold
    bucket = make_bucket("roman", sizes={FLAT: size})
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), "--all", "--cache", cache, "--json", "-q")
    assert result.exit_code == 0, result.stderr
    assert (cache / "references/roman" / FLAT).read_bytes() == bucket.references[FLAT]
    assert leftovers(cache) == []


def test_an_object_longer_than_server_config_says_fails_alone(
    make_bucket, cli, s3, tmp_path: Path
) -> None:
    bucket = make_bucket("roman", sizes={FLAT: 2 << 20})
    longer = bucket.references[FLAT] + b"extra"
    s3.put_object(Bucket=bucket.name, Key=f"crds/references/roman/{FLAT}", Body=longer)
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), "--all", "--cache", cache, "--json", "-q")
    assert result.exit_code == 1
    failed = json.loads(result.stdout)["failed"]
    assert [f["name"] for f in failed] == [FLAT]
    assert f"object is {len(longer)} bytes" in failed[0]["error"]
    assert not (cache / "references/roman" / FLAT).exists()
    assert leftovers(cache) == []
