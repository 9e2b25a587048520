"""What the operating system must allow: enough open files for --jobs, and POSIX."""

import json
import os
import subprocess
import sys

import pytest
from conftest import files_under

from crds_s3_sync.engine.platforms import check_platform
from crds_s3_sync.errors import SyncError

# python -c LIMITED SOFT HARD ARGS...: the CLI under an open-file limit.
LIMITED = """
import resource, runpy, sys
soft, hard = int(sys.argv.pop(1)), int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
sys.argv[0] = "crds-s3-sync"
runpy.run_module("crds_s3_sync", run_name="__main__")
"""


@pytest.mark.parametrize(("soft", "hard", "capped"), [(100, 4096, False), (160, 160, True)])
def test_open_file_limit_is_raised_or_jobs_capped(make_bucket, tmp_path, soft, hard, capped):
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            LIMITED,
            str(soft),
            str(hard),
            *bucket.args(),
            "--all",
            "--cache",
            str(cache),
            "--json",
            "--jobs",
            "256",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["failed"] == []
    note = "note: the open-file limit is 160, too low for --jobs 256: using --jobs 32"
    assert (note in done.stderr) is capped, done.stderr
    assert files_under(cache)


def test_windows_is_refused_in_one_line(monkeypatch) -> None:
    monkeypatch.setattr(os, "name", "nt")
    with pytest.raises(SyncError, match="needs a POSIX system"):
        check_platform()
