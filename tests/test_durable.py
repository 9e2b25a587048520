"""Durable before visible, seen from the kernel's side: the sync runs under strace
(Debian's package), and for every final name, its data was flushed (the file's
own fsync, or a syncfs of the cache's file system) after the temporary file was
created and before the rename, and its directory was flushed after."""

import os
import sys
from pathlib import Path

from conftest import mappings_of
from tracing import FD_PATH, RENAME, events, needs_strace, traced

NIRSPEC = "jwst_nirspec_0192.imap"
pytestmark = needs_strace


def test_every_final_name_is_flushed_before_it_appears(make_bucket, tmp_path) -> None:
    big = "jwst_nirspec_area_0023.fits"
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC), sizes={big: 3 << 20})
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "crds_s3_sync", *bucket.args(), "--cache", str(cache)]
    command += ["--context", NIRSPEC, "--multipart-threshold", "1M", "--part-size", "512K", "-q"]
    done = traced(command, tmp_path / "trace")
    assert done.returncode == 0, done.stderr
    calls = events(tmp_path / "trace")

    created: dict[str, float] = {}
    flushes: list[tuple[float, str, str]] = []  # time, call, path
    renames: list[tuple[float, str, str]] = []  # time, old, new
    for time, call, arguments in calls:
        if call == "openat" and "O_CREAT" in arguments:
            created.setdefault(arguments.split('"')[1], time)
        elif call in ("fsync", "fdatasync", "syncfs") and (path := FD_PATH.match(arguments)):
            flushes.append((time, call, path.group(1)))
        elif call.startswith("rename") and (names := RENAME.search(arguments)):
            renames.append((time, *names.groups()))

    finals = [(t, old, new) for t, old, new in renames if not Path(new).name.startswith(".")]
    assert len(finals) >= 100 and any(new.endswith(big) for _, _, new in finals)
    for when, old, new in finals:
        born = created.get(old, 0.0)
        assert any(
            born < t < when and (path == old or (call == "syncfs" and new.startswith(path + "/")))
            for t, call, path in flushes
        ), f"{new}: renamed with no flush of its data before"
        assert any(t > when and path == os.path.dirname(new) for t, call, path in flushes), (
            f"{new}: its directory was not flushed after"
        )


def test_no_fsync_flushes_nothing_it_downloads(make_bucket, tmp_path) -> None:
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC))
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "crds_s3_sync", *bucket.args(), "--cache", str(cache)]
    done = traced([*command, "--context", NIRSPEC, "--no-fsync", "-q"], tmp_path / "trace")
    assert done.returncode == 0, done.stderr
    flushed = [a for _, call, a in events(tmp_path / "trace") if call in ("fsync", "syncfs")]
    assert not [a for a in flushed if "/references/" in a]
