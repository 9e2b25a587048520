"""No debris: work files whose owner is provably gone are cleared by the next run
and by --purge, and those of live runs are left alone (`workfiles`)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Bucket, files_under

from crds_s3_sync.cache.workfiles import DEBRIS_AGE, HOST, RunFile, sweep
from crds_s3_sync.errors import SyncError

# A run's stand-in: holds its run file (unless told not to), leaves a temporary
# file and a held lock file beside `final`, says who it is, then waits to be killed.
WORKER = r"""
import fcntl, os, sys, time
from pathlib import Path
from crds_s3_sync.cache.workfiles import RunFile, temporary_name
cache, final, with_run_file = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
run = RunFile(cache).__enter__() if with_run_file else None
Path(temporary_name(final)).write_bytes(b"half")
lock = os.open(final.with_name(f".{final.name}.held.lock"), os.O_RDWR | os.O_CREAT)
fcntl.lockf(lock, fcntl.LOCK_EX)
print(os.getpid(), flush=True)
time.sleep(300)
"""


def worker(cache: Path, final: Path, run_file: bool = True) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(cache), str(final), "1" if run_file else "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == str(process.pid)
    return process


def hidden(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.startswith(".")}


def test_a_sweep_removes_only_what_is_provably_abandoned(tmp_path) -> None:
    cache = tmp_path / "cache"
    refs = cache / "references" / "roman"
    refs.mkdir(parents=True)
    live = worker(cache, refs / "live.asdf")
    killed = worker(cache, refs / "killed.asdf")
    unlocked = worker(cache, refs / "unlocked.asdf", run_file=False)
    try:
        for process in (killed, unlocked):
            process.send_signal(signal.SIGKILL)
            process.wait()
        other = [f".far.asdf.another-host-{n}-a1b2c3-0.tmp" for n in (1, 2)]
        for name in (*other, ".free.asdf.lock", ".big.asdf.part", ".big.asdf.part.json"):
            (refs / name).write_bytes(b"")
        old = time.time() - DEBRIS_AGE - 60
        os.utime(refs / other[1], (old, old))
        (cache / ".crds-s3-sync.another-host-2-a1b2c3.run").write_bytes(b"")  # its run file: free
        before = hidden(refs)

        removed = sweep(cache, [refs, cache / "mappings" / "roman"])

        left = hidden(refs)
        assert {name for name in before - left if name.endswith(".tmp")} == {
            n for n in before if n.endswith(".tmp") and f"-{killed.pid}-" in n
        } | {n for n in before if f"-{unlocked.pid}-" in n} | {other[1]}
        assert ".free.asdf.lock" not in left
        assert ".killed.asdf.held.lock" not in left and ".unlocked.asdf.held.lock" not in left
        # The live run's files, another host's recent one and resumable parts stay.
        assert any(f"{HOST}-{live.pid}-" in name for name in left)
        assert {".live.asdf.held.lock", other[0], ".big.asdf.part", ".big.asdf.part.json"} <= left
        run_files = {p.name for p in cache.iterdir() if p.name.endswith(".run")}
        (run_file,) = run_files
        assert run_file.startswith(f".crds-s3-sync.{HOST}-{live.pid}-")
        assert removed == len(before - left) + 2  # and the two free run files
    finally:
        live.kill()
        live.wait()
    assert sweep(cache, [refs]) == 3  # the live run's temporary, lock and run files


def sync(bucket: Bucket, cache: Path, *extra: str, code: int = 0) -> dict:
    command = [sys.executable, "-m", "crds_s3_sync", *bucket.args(), "--cache", str(cache)]
    done = subprocess.run(
        [*command, "--json", "-q", *extra],
        capture_output=True,
        text=True,
    )
    assert done.returncode == code, done.stderr
    return json.loads(done.stdout)


def test_purge_clears_the_debris_of_runs_that_are_gone(make_bucket, tmp_path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    sync(bucket, cache, "--all")
    refs = cache / "references" / "roman"
    gone = worker(cache, refs / "roman_wfi_dark_0001.asdf")
    gone.kill()
    gone.wait()
    assert hidden(refs) and any(p.suffix == ".run" for p in cache.iterdir())
    sync(bucket, cache, "--all", "--purge")
    assert not [name for name in files_under(cache) if Path(name).name.startswith(".")]


@pytest.mark.parametrize("then", ["sync", "check", "purge"])
def test_a_cached_mapping_that_fails_its_check_is_not_kept(make_bucket, tmp_path, then) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    sync(bucket, cache, "--all")
    rmap = next((cache / "mappings" / "roman").glob("*.rmap"))
    right = rmap.read_bytes()
    stat = rmap.stat()
    rmap.write_bytes(b"#" * len(right))  # right size, wrong bytes, the times kept:
    os.utime(rmap, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # only the walk's SHA-1 sees it,
    (cache / "config/roman/crds-s3-sync-mappings.json").unlink()  # reading it unparsed
    if then == "sync":
        sync(bucket, cache, "--all")
        assert rmap.read_bytes() == right
    elif then == "check":
        problems = sync(bucket, cache, "--all", "--check", code=1)["problems"]
        assert [(p["name"], p["problem"]) for p in problems] == [(rmap.name, "corrupt")]
    else:
        sync(bucket, cache, "--all", "--purge")
        assert not rmap.exists()


def test_one_process_runs_one_sync_into_a_cache_at_a_time(tmp_path) -> None:
    with RunFile(tmp_path) as held:
        assert held.path.exists()
        with pytest.raises(SyncError, match="already syncing into this cache"):
            RunFile(tmp_path).__enter__()
    assert not held.path.exists()
    with RunFile(tmp_path):  # once the first is done, the next may start
        pass
