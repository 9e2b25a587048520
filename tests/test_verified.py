"""The index of verified files (`verified`): a file changed since it was verified is
re-hashed by a plain re-run, one left alone is never read again, and a lost,
corrupt or shared index never gives a wrong answer. Which files a run reads is
seen from the kernel's side (strace)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Bucket
from tracing import events, needs_strace, traced

INDEX = "config/roman/crds-s3-sync-verified.json"
pytestmark = needs_strace


def command(bucket: Bucket, cache: Path, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "crds_s3_sync", *bucket.args(), "--cache", str(cache)),
        *("--all", "--json", "-q", *extra),
    ]


def sync(bucket: Bucket, cache: Path, *extra: str) -> dict:
    done = subprocess.run(command(bucket, cache, *extra), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def traced_sync(bucket: Bucket, cache: Path, log: Path) -> tuple[dict, set[str]]:
    """A sync's report, and the references it opened to read."""
    done = traced(command(bucket, cache), log, calls="openat")
    assert done.returncode == 0, done.stderr
    read = {
        arguments.split('"')[1]
        for _, call, arguments in events(log)
        if "O_RDONLY" in arguments and "/references/" in arguments
    }
    return json.loads(done.stdout), {Path(path).name for path in read if not Path(path).is_dir()}


def records(cache: Path) -> dict[str, list]:
    return json.loads((cache / INDEX).read_text())["files"]


@pytest.fixture
def synced(make_bucket, tmp_path) -> tuple[Bucket, Path, list[Path]]:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    sync(bucket, cache)
    references = sorted((cache / "references/roman").iterdir())
    assert len(references) >= 3
    return bucket, cache, references


def test_each_verified_file_is_recorded_as_it_is(synced) -> None:
    _, cache, references = synced
    found = records(cache)
    for path in references:
        size, mtime, ctime, inode, sha1 = found[str(path.relative_to(cache))]
        stat = path.stat()
        assert (size, mtime, ctime, inode) == (
            stat.st_size,
            stat.st_mtime_ns,
            stat.st_ctime_ns,
            stat.st_ino,
        )
        assert len(sha1) == 40
    assert any(key.startswith("mappings/roman/") for key in found)


def test_a_touched_file_is_rehashed_and_kept(synced, tmp_path) -> None:
    bucket, cache, references = synced
    touched = references[1]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    report, read = traced_sync(bucket, cache, tmp_path / "trace")
    assert report["downloaded"] == 0
    assert read == {touched.name}  # the touched file, and no other
    record = records(cache)[str(touched.relative_to(cache))]
    assert record[1] == touched.stat().st_mtime_ns
    assert touched.read_bytes() == bucket.references[touched.name]


def test_a_copy_that_kept_its_times_is_recorded_without_reading(synced, tmp_path) -> None:
    bucket, cache, references = synced
    moved = references[0]
    copy = tmp_path / "copy"
    shutil.copy2(moved, copy)  # contents and modification time kept, a new inode
    os.replace(copy, moved)
    report, read = traced_sync(bucket, cache, tmp_path / "trace")
    assert report["downloaded"] == 0 and read == set()
    assert records(cache)[str(moved.relative_to(cache))][3] == moved.stat().st_ino


@pytest.mark.parametrize(
    "damage",
    [
        None,
        b"\x00\x17 not json",
        b'{"version": 1, "files": {"references/roman/x": [1, 2]}}',
        b'{"version": 1, "files": []}',
        b'{"version": 99, "files": {}}',
    ],
    ids=["deleted", "garbage", "bad-entry", "bad-shape", "other-version"],
)
def test_a_lost_or_corrupt_index_costs_no_rehash(synced, tmp_path, damage: bytes | None) -> None:
    bucket, cache, _ = synced
    before = records(cache)
    index = cache / INDEX
    index.unlink() if damage is None else index.write_bytes(damage)
    report, read = traced_sync(bucket, cache, tmp_path / "trace")
    assert report["downloaded"] == 0 and read == set()  # checked by size, as before
    assert records(cache) == before  # and recorded again


def test_a_record_naming_another_sha1_is_not_trusted(synced, tmp_path) -> None:
    bucket, cache, references = synced
    key = str(references[0].relative_to(cache))
    document = json.loads((cache / INDEX).read_text())
    right = document["files"][key][4]
    document["files"][key][4] = "0" * 40
    (cache / INDEX).write_text(json.dumps(document))
    report, read = traced_sync(bucket, cache, tmp_path / "trace")
    assert report["downloaded"] == 0 and read == {references[0].name}
    assert records(cache)[key][4] == right


def test_runs_sharing_a_cache_keep_each_others_records(make_bucket, tmp_path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    shards = [
        subprocess.Popen(command(bucket, cache, "--shard", f"{k}/3"), stdout=subprocess.PIPE)
        for k in (1, 2, 3)
    ]
    for process in shards:
        process.communicate(timeout=120)
        assert process.returncode == 0
    found = records(cache)
    for path in (cache / "references/roman").iterdir():
        assert str(path.relative_to(cache)) in found, path.name
