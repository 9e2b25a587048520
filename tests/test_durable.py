"""Durable before visible, seen from the kernel's side: the sync runs under strace
(Debian's package), and for every final name, its data was flushed (the file's
own fsync, or a syncfs of the cache's file system) after the temporary file was
created and before the rename, and its directory was flushed after."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import mappings_of

NIRSPEC = "jwst_nirspec_0192.imap"
LINE = re.compile(r"^(\d+\.\d+) (\w+)\((.*)\) += (-?\d+)")
FD_PATH = re.compile(r"^\d+<([^>]+)>")
RENAME = re.compile(r'"([^"]+)", (?:AT_FDCWD, )?"([^"]+)"')

pytestmark = pytest.mark.skipif(
    shutil.which("strace") is None, reason="needs strace (apt-get install strace)"
)


def traced(command: list[str], log: Path) -> subprocess.CompletedProcess:
    calls = "openat,rename,renameat,renameat2,fsync,fdatasync,syncfs"
    return subprocess.run(
        [
            "strace",
            "-f",
            "-ff",
            "-ttt",
            "-y",
            "-qq",
            "-e",
            f"trace={calls}",
            "-o",
            str(log),
            *command,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def events(log: Path) -> list[tuple[float, str, str]]:
    """Every completed call of every thread, in time order: (time, call, arguments)."""
    found = []
    for part in log.parent.glob(f"{log.name}.*"):
        for line in part.read_text().splitlines():
            if match := LINE.match(line):
                time, call, arguments, result = match.groups()
                if result != "-1":
                    found.append((float(time), call, arguments))
    return sorted(found)


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


def test_only_temporaries_of_gone_processes_on_this_host_are_removed(tmp_path) -> None:
    from crds_s3_sync.layout import remove_stale_temporaries, temporary_name

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(gone.stdout)
    ours = Path(temporary_name(tmp_path / "live.fits"))  # this process: alive
    dead = Path(str(ours).replace(f"-{os.getpid()}-", f"-{dead_pid}-").replace("live", "dead"))
    elsewhere = tmp_path / ".far.fits.another-host-1-1.tmp"
    final = tmp_path / "kept.fits"
    for path in (ours, dead, elsewhere, final):
        path.write_bytes(b"x")
    assert remove_stale_temporaries([tmp_path, tmp_path / "missing"]) == 1
    assert not dead.exists()
    assert ours.exists() and elsewhere.exists() and final.exists()
