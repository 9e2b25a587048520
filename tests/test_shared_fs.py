"""Shared file systems, as far as this machine can stand them in: a file system
without locks (NFS with no lock manager, Lustre without `flock`) and a cache
shared by a group of users. (The same-machine concurrency tests in test_ci run
on a tmpfs and an ext4 image too.)"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Bucket, files_under, read_until

from crds_s3_sync.engine.whole import IN_MEMORY

DARK = "roman_wfi_dark_0001.asdf"

# Every lock request answered as by NFS without its lock manager: ENOLCK. Loaded
# with LD_PRELOAD, it stands in for the file system; nothing of ours is replaced.
NO_LOCKS = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>

static int refused(int cmd) {
    return cmd == F_SETLK || cmd == F_SETLKW || cmd == F_GETLK
        || cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW || cmd == F_OFD_GETLK;
}

#define WRAP(name)                                                          \
    int name(int fd, int cmd, ...) {                                        \
        static int (*real)(int, int, ...);                                  \
        va_list ap;                                                         \
        va_start(ap, cmd);                                                  \
        void *arg = va_arg(ap, void *);                                     \
        va_end(ap);                                                         \
        if (refused(cmd)) { errno = ENOLCK; return -1; }                    \
        if (!real) real = (int (*)(int, int, ...))dlsym(RTLD_NEXT, #name);  \
        return real(fd, cmd, arg);                                          \
    }
WRAP(fcntl)
WRAP(fcntl64)
"""


def command(bucket: Bucket, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "crds_s3_sync", *bucket.args(), "--cache", str(cache), *extra]


@pytest.fixture
def no_locks(tmp_path) -> str:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("a C compiler is needed to stand in for a file system without locks")
    source, library = tmp_path / "nolocks.c", tmp_path / "nolocks.so"
    source.write_text(NO_LOCKS)
    subprocess.run([compiler, "-shared", "-fPIC", "-o", library, source, "-ldl"], check=True)
    return str(library)


def test_without_file_locks_the_sync_says_so_once_and_goes_on(make_bucket, tmp_path, no_locks):
    # Big enough to take a lock, and fetched in ranged parts: two runs at once must
    # not share a part file.
    bucket = make_bucket("roman", sizes={DARK: 3 * IN_MEMORY})
    cache = tmp_path / "cache"
    environment = {**os.environ, "LD_PRELOAD": no_locks}
    ranged = ("--multipart-threshold", "1M", "--part-size", "256K")
    probe = subprocess.run(
        [sys.executable, "-c", "import fcntl; fcntl.lockf(0, fcntl.LOCK_SH)"],
        stdin=subprocess.DEVNULL,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert "No locks available" in probe.stderr  # the stand-in works
    runs = [
        subprocess.Popen(
            command(bucket, cache, "--all", "--jobs", "4", *ranged),
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    told = 0
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        said = [line for line in err.splitlines() if "no file locks here (ENOLCK)" in line]
        # A run that starts after the other has finished (a loaded machine) has
        # nothing to fetch: it takes no file's lock, but the verified index's when it
        # records the files the other run placed (it read the index before they were
        # in it), so it says so once or not at all.
        fetched_none = "\n0 files to fetch" in f"\n{err}"
        assert len(said) in ((0, 1) if fetched_none else (1,)), err
        told += len(said)
        assert all("runs sharing this cache may fetch the same file" in line for line in said)
    assert told >= 1
    assert (cache / "references/roman" / DARK).read_bytes() == bucket.references[DARK]
    check = subprocess.run(
        command(bucket, cache, "--all", "--check", "--verify", "--json", "-q"),
        env=environment,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and json.loads(check.stdout)["problems"] == []
    assert not [name for name in files_under(cache) if Path(name).name.startswith(".")]


# -- a group's cache -------------------------------------------------------------------

GROUP, ALICE, BOB = 41000, 41001, 41002  # ids no account on the machine needs to have

# Leaves what a run killed as Alice would: a temporary file, a lock file and a
# part file, created with her umask (022: readable, not writable, by the group).
LEAVE = r"""
import fcntl, os, sys, time
from pathlib import Path
from crds_s3_sync.cache.workfiles import RunFile, temporary_name
cache, final = Path(sys.argv[1]), Path(sys.argv[2])
RunFile(cache).__enter__()
Path(temporary_name(final)).write_bytes(b"half")
Path(final.parent, f".{final.name}.part").write_bytes(b"half")
lock = os.open(final.with_name(f".{final.name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
fcntl.lockf(lock, fcntl.LOCK_EX)
print("left", flush=True)
time.sleep(300)
"""


@pytest.fixture
def group_directory() -> Iterator[Path]:
    """A setgid directory of GROUP that ALICE and BOB can reach (the test's own
    temporary directory is private to root)."""
    if os.geteuid() != 0:
        pytest.skip("acting as two users takes root")
    base = Path(tempfile.mkdtemp(prefix="crds-s3-sync-group-"))
    try:
        os.chmod(base, 0o755)
        shared = base / "shared"
        shared.mkdir()
        os.chown(shared, 0, GROUP)
        os.chmod(shared, 0o2775)
        yield shared
    finally:
        shutil.rmtree(base)


def as_user(user: int, umask: int) -> dict:
    return {"user": user, "group": GROUP, "extra_groups": [], "umask": umask}


@pytest.fixture
def their_python(group_directory) -> tuple[str, dict[str, str]]:
    """An interpreter the two users can run, and its environment: this one, or, when
    it lives where only root may look, the system's of the same version given this
    one's packages (same ABI, so the compiled ones load too)."""
    import crds_s3_sync

    packages = [str(Path(crds_s3_sync.__file__).parents[1]), sysconfig.get_paths()["purelib"]]
    environment = {
        **os.environ,
        "HOME": str(group_directory),
        "PYTHONPATH": os.pathsep.join(packages),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, shutil.which(version, path="/usr/bin:/usr/local/bin")):
        if python is None:
            continue
        try:
            probe = subprocess.run(
                [python, "-c", "import crds_s3_sync.cli.app"],
                env=environment,
                capture_output=True,
                **as_user(ALICE, 0o002),
            )
        except PermissionError:  # not theirs to run
            continue
        if probe.returncode == 0:
            return python, environment
    pytest.skip(f"no {version} that another user may run (this one is {sys.executable})")


def test_a_cache_shared_by_a_group_works_for_each_member(
    make_bucket, group_directory, their_python
) -> None:
    bucket = make_bucket("roman", sizes={DARK: 2 * IN_MEMORY})  # big enough to take a lock
    cache = group_directory / "cache"
    python, environment = their_python

    def command(bucket: Bucket, cache: Path, *extra: str) -> list[str]:
        return [python, "-m", "crds_s3_sync", *bucket.args(), "--cache", str(cache), *extra]

    first = subprocess.run(
        command(bucket, cache, "--all", "-q"),
        env=environment,
        capture_output=True,
        text=True,
        **as_user(ALICE, 0o002),
    )
    assert first.returncode == 0, first.stderr
    dark = cache / "references/roman" / DARK
    dark.unlink()
    # Alice is fetching the big file (with her usual umask) when Bob starts.
    alice = subprocess.Popen(
        [python, "-c", LEAVE, str(cache), str(dark)],
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
        **as_user(ALICE, 0o022),
    )
    try:
        assert alice.stdout.readline().strip() == "left"
        bob = subprocess.Popen(
            command(bucket, cache, "--all"),
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **as_user(BOB, 0o002),
        )
        read_until(bob.stderr, "another process is fetching it; waiting for it")
        assert bob.poll() is None and not dark.exists()  # Bob waits for Alice's lock,
        alice.send_signal(signal.SIGKILL)  # which a lock file he may not write outlives
        alice.wait()
        _, err = bob.communicate(timeout=120)
    finally:
        alice.kill()
        alice.wait()
    assert bob.returncode == 0, err
    assert "Traceback" not in err
    assert dark.read_bytes() == bucket.references[DARK] and dark.stat().st_uid == BOB

    again = subprocess.run(
        command(bucket, cache, "--all", "--verify", "--json", "-q"),
        env=environment,
        capture_output=True,
        text=True,
        **as_user(ALICE, 0o002),
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["downloaded"] == 0
    # Alice's leftovers went, and everything is the group's to write.
    assert not [name for name in files_under(cache) if Path(name).name.startswith(".")]
    for path in [cache, *cache.rglob("*")]:
        found = path.stat()
        assert found.st_gid == GROUP, path
        if path.is_dir():
            assert found.st_mode & stat.S_ISGID and found.st_mode & stat.S_IWGRP, path
        else:
            assert found.st_mode & 0o777 == 0o664, path
