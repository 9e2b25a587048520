"""Killed, interrupted and out of space: the cache stays valid and the next run resumes.

Kills are timed by the requests themselves: the sync runs through the fault
proxy (tests/faults.py), whose plan sends the signal when the N-th GET of a
kind arrives, so "during the plan" or "mid-download" is exact, not a guess.
"""

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import RULES, files_under, final_lines, interruptible, mappings_of
from faults import FaultProxy

from crds_s3_sync.rules.mapping import parse_mapping

NIRSPEC = "jwst_nirspec_0192.imap"  # part of jwst_0541: a few hundred references
PARTS = ["--part-size", "64K", "--multipart-threshold", "1M"]


def big_reference() -> str:
    imap = parse_mapping(NIRSPEC, (RULES / "mappings/jwst" / NIRSPEC).read_text())
    rmap = imap.mappings[0]
    return parse_mapping(rmap, (RULES / "mappings/jwst" / rmap).read_text()).references[0]


def command(bucket, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "crds_s3_sync", *bucket.args(), "--cache", str(cache), *extra]


def check_nothing_wrong(cache: Path, bucket) -> None:
    """Every file under a final name is exactly the bucket's (or the rules') file."""
    for name in files_under(cache):
        path = cache / name
        if path.name.startswith(".") or name.startswith("config/"):
            continue
        if "/references/" in f"/{name}":
            assert path.read_bytes() == bucket.references[path.name], name
        else:
            assert path.read_bytes() == (RULES / "mappings/jwst" / path.name).read_bytes(), name


def signal_at(bucket, cache: Path, sig: int, when: str, count: int, big: str):
    """Run a sync through the proxy and send `sig` when the `count`-th GET of `when`
    (mappings, references, or parts of the big file) arrives; return the process."""
    seen = {"n": 0}
    process: dict[str, subprocess.Popen] = {}

    def plan(key: str, attempt: int) -> str | None:
        kind = "big" if key.endswith(big) else key.split("/")[1]
        if kind == when:
            seen["n"] += 1
            if seen["n"] == count:
                os.kill(process["it"].pid, sig)
        return None

    proxy = FaultProxy(bucket.endpoint, plan)
    with proxy:
        args = dataclasses.replace(bucket, endpoint=proxy.url)
        process["it"] = subprocess.Popen(
            command(args, cache, "--context", NIRSPEC, "--jobs", "4", *PARTS),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        )
        out, err = process["it"].communicate(timeout=120)
    assert seen["n"] >= count, f"only {seen['n']} GETs of {when}"
    return process["it"].returncode, out, err


@pytest.mark.parametrize(
    ("when", "count"),
    [("mappings", 3), ("references", 60), ("big", 10)],
    ids=["during-the-plan", "mid-small-files", "mid-ranged-file"],
)
def test_a_killed_sync_resumes(make_bucket, tmp_path, when: str, count: int) -> None:
    big = big_reference()
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC), sizes={big: 4 << 20})
    cache = tmp_path / "cache"
    code, _, _ = signal_at(bucket, cache, signal.SIGKILL, when, count, big)
    assert code == -signal.SIGKILL
    check_nothing_wrong(cache, bucket) if cache.exists() else None
    debris = [name for name in files_under(cache) if Path(name).name.startswith(".")]
    if when != "mappings":  # killed while fetching: its run file at least is left
        assert any(name.endswith(".run") for name in debris), debris

    again = subprocess.run(
        command(bucket, cache, "--context", NIRSPEC, "--json", "-q", *PARTS),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    if when != "mappings":  # the first run had fetched something: it is kept
        assert report["downloaded"] < report["files"]
        assert report["skipped"] > 0 or report["resumed_bytes"] > 0
    if when == "big":
        assert report["resumed_bytes"] > 0
    check_nothing_wrong(cache, bucket)
    # No debris: no hidden file is left, and what was verified is recorded.
    assert not [name for name in files_under(cache) if Path(name).name.startswith(".")]
    assert (cache / "config/jwst/crds-s3-sync-verified.json").is_file()
    check = subprocess.run(
        command(bucket, cache, "--context", NIRSPEC, "--check", "--verify", "-q"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout


def test_ctrl_c_stops_cleanly_with_a_summary(make_bucket, tmp_path) -> None:
    big = big_reference()
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC))
    cache = tmp_path / "cache"
    code, _, err = signal_at(bucket, cache, signal.SIGINT, "references", 60, big)
    assert code == 130, err
    (line,) = final_lines(err)
    assert line.startswith("crds-s3-sync: interrupted; ") and "run again to resume" in line
    check_nothing_wrong(cache, bucket)
    assert not [n for n in files_under(cache) if Path(n).name.endswith(".tmp")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("when", ["references", "big"], ids=["mid-small-files", "mid-ranged-file"])
def test_sigterm_and_sighup_stop_like_ctrl_c(make_bucket, tmp_path, sig: int, when: str) -> None:
    """A batch system's time limit (SIGTERM) or a closed terminal (SIGHUP): one line,
    128 + the signal, and nothing hidden left but a large file's resumable parts."""
    big = big_reference()
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC), sizes={big: 4 << 20})
    cache = tmp_path / "cache"
    code, _, err = signal_at(bucket, cache, sig, when, 10, big)
    assert code == 128 + sig, err
    lines = final_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"crds-s3-sync: stopped by {signal.Signals(sig).name}; "), err
    hidden = [Path(n).name for n in files_under(cache) if Path(n).name.startswith(".")]
    assert not [n for n in hidden if not n.endswith((".part", ".part.json"))], hidden
    check_nothing_wrong(cache, bucket)


# -- a full disk -----------------------------------------------------------------------------


# python -c LIMITED BYTES ARGS...: the CLI with writes past BYTES failing (EFBIG).
LIMITED = """
import resource, runpy, sys
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv[0] = "crds-s3-sync"
runpy.run_module("crds_s3_sync", run_name="__main__")
"""


@contextlib.contextmanager
def small_file_system(path: Path, size: str):
    """A tmpfs of `size` at `path` where the tests may mount one (root); else None,
    and the caller limits the file size instead (RLIMIT_FSIZE: EFBIG, not ENOSPC)."""
    path.mkdir()
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        tag = f"crds-test-{uuid.uuid4().hex[:8]}"
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", tag, str(path)],
            capture_output=True,
            check=False,
        )
        mounted = done.returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


def test_a_disk_filling_mid_run_stops_the_sync_and_leaves_no_debris(make_bucket, tmp_path) -> None:
    """Writes fail part way (here: a file size limit, EFBIG, as another writer filling
    the disk would make them fail with ENOSPC after the run's own check of free space)."""
    big = big_reference()
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC), sizes={big: 3 << 20})
    cache = tmp_path / "cache"
    sync = command(bucket, cache, "--context", NIRSPEC, "--json", "-q")
    sync[1:3] = ["-c", LIMITED, str(2 << 20)]  # set in the child: no preexec_fn among threads
    done = subprocess.run(sync, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 2, done.stderr
    (line,) = final_lines(done.stderr)
    assert "File too large" in line and "free space" in line
    assert not (cache / "references" / "jwst" / big).exists()
    check_nothing_wrong(cache, bucket)
    debris = [n for n in files_under(cache) if Path(n).name.startswith(".")]
    assert debris == []


def test_a_sync_that_cannot_fit_stops_before_writing(make_bucket, tmp_path) -> None:
    big = big_reference()
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC), sizes={big: 3 << 20})
    with small_file_system(tmp_path / "small", "2m") as mounted:
        if not mounted:
            pytest.skip("needs a small file system: mounting a tmpfs needs root")
        cache = tmp_path / "small" / "cache"
        sync = command(bucket, cache, "--context", NIRSPEC, "--json")
        done = subprocess.run(sync, capture_output=True, text=True, check=False, timeout=120)
        assert done.returncode == 2, done.stderr
        (line,) = final_lines(done.stderr)
        assert re.search(r"[\d.]+ MB to fetch but [\d.]+ MB free", line), line
        assert json.loads(done.stdout)["exit"] == 2
        assert not (cache / "references").exists()
