"""What people and CI logs see: a dashboard on a terminal, plain lines otherwise."""

import io
import json
import os
import subprocess
import sys
from pathlib import PurePosixPath

from rich.console import Console

from crds_s3_sync.layout import Kind
from crds_s3_sync.plans import FileSpec
from crds_s3_sync.progress import Dashboard, JsonLines, PlainProgress, Progress, make_progress
from crds_s3_sync.settings import Location


def spec(name: str, size: int = 1000) -> FileSpec:
    return FileSpec(
        name,
        Kind.reference,
        size,
        None,
        None,
        Location("b", "p"),
        PurePosixPath("references/x") / name,
    )


def run_events(progress: Progress) -> None:
    progress.planned(3, 3000)
    with progress:
        a, b, c = spec("a.fits"), spec("b.fits"), spec("c.fits")
        progress.finished(a, "skipped", 1000)
        progress.started(b)
        progress.advanced(b, 400)
        progress.restart(b)
        progress.retrying("s3://b/p/b.fits", "s3://b/p/b.fits: SlowDown", 1, 0.2)
        progress.advanced(b, 1000)
        progress.started(c)
        progress.advanced(c, 300)


def test_plain_lines_are_rate_limited() -> None:
    out = io.StringIO()
    progress = PlainProgress(Console(file=out, force_terminal=False, width=200), interval=3600)
    run_events(progress)
    progress.finished(spec("b.fits"), "downloaded")
    progress.finished(spec("c.fits"), "failed")
    retry, *lines = out.getvalue().splitlines()
    assert retry == "retrying (1 tries, 0 s so far): s3://b/p/b.fits: SlowDown"
    assert lines == [lines[-1]], "only the final line: the interval never passed"
    assert "3/3 files" in lines[0] and "skipped 1" in lines[0] and "failed 1" in lines[0]
    assert "retried 1" in lines[0]


def test_dashboard_shows_files_in_flight_and_counts() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=100, record=True)
    progress = Dashboard(console)
    run_events(progress)
    console.print(progress._render())
    screen = console.export_text()
    assert "b.fits" in screen and "c.fits" in screen  # in flight
    assert "a.fits" not in screen  # done
    assert "skipped 1" in screen and "retried 1" in screen and "failed 0" in screen
    assert progress.done_bytes == 1000 + 1000 + 300  # the restart took back b's 400


def test_progress_kind_follows_the_output() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True)
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert type(make_progress(terminal, quiet=True)) is Progress
    assert type(make_progress(terminal, quiet=False)) is Dashboard
    assert type(make_progress(pipe, quiet=False)) is PlainProgress
    # stdout redirected (`> plan.json`, `| tee`): no live view on the stderr terminal
    assert type(make_progress(terminal, False, stdout_is_terminal=False)) is PlainProgress
    assert type(make_progress(terminal, False, "json")) is JsonLines


def test_console_script_in_a_pipe(make_bucket, tmp_path) -> None:
    """As CI runs it: stdout is one JSON document; progress and summary go to stderr."""
    bucket = make_bucket("roman")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "crds_s3_sync",
            *bucket.args(),
            "--all",
            "--cache",
            str(tmp_path / "cache"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["failed"] == []
    assert "files," in done.stderr  # a plain progress line
    assert "Synced" in done.stderr and "\x1b[" not in done.stderr  # no terminal codes
