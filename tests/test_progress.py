"""What people and CI logs see: views of the run's ledger, a dashboard on a terminal,
plain lines otherwise."""

import io
import json
import os
import subprocess
import sys

from rich.console import Console

from crds_s3_sync.cli.views import Dashboard, JsonLines, PlainLines, View, make_view
from crds_s3_sync.engine.ledger import (
    Finished,
    Ledger,
    Planned,
    Received,
    Restarted,
    Retrying,
    Started,
)
from crds_s3_sync.network.location import Location
from crds_s3_sync.rules.layout import Kind
from crds_s3_sync.rules.plans import FileSpec


def spec(name: str, size: int = 1000) -> FileSpec:
    return FileSpec(
        name,
        Kind.reference,
        size,
        None,
        None,
        Location("b", "p"),
        f"references/x/{name}",
    )


def run_events(ledger: Ledger) -> None:
    ledger.record(Planned(3, 3000))
    a, b, c = spec("a.fits"), spec("b.fits"), spec("c.fits")
    ledger.record(Finished(a, "skipped", 1000))
    ledger.record(Started(b))
    ledger.record(Received(b, 400))
    ledger.record(Restarted(b))
    ledger.record(Retrying("s3://b/p/b.fits", "s3://b/p/b.fits: SlowDown", 1, 0.2))
    ledger.record(Received(b, 1000))
    ledger.record(Started(c))
    ledger.record(Received(c, 300))


def test_plain_lines_are_rate_limited() -> None:
    out = io.StringIO()
    ledger = Ledger()
    PlainLines(ledger, Console(file=out, force_terminal=False, width=200), interval=3600)
    run_events(ledger)
    ledger.record(Finished(spec("b.fits"), "downloaded", 1000))
    ledger.record(Finished(spec("c.fits"), "failed", 1000, "lost"))
    retry, *lines = out.getvalue().splitlines()
    assert retry == "retrying (1 tries, 0 s so far): s3://b/p/b.fits: SlowDown"
    assert lines == [lines[-1]], "only the final line: the interval never passed"
    assert "3/3 files" in lines[0] and "skipped 1" in lines[0] and "failed 1" in lines[0]
    assert "retried 1" in lines[0]


def test_dashboard_shows_files_in_flight_and_counts() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=100, record=True)
    ledger = Ledger()
    with Dashboard(ledger, console) as dashboard:
        run_events(ledger)
    console.print(dashboard._render())
    screen = console.export_text()
    assert "b.fits" in screen and "c.fits" in screen  # in flight
    assert "a.fits" not in screen  # done
    assert "skipped 1" in screen and "retried 1" in screen and "failed 0" in screen
    assert ledger.done_bytes == 1000 + 1000 + 300  # the restart took back b's 400


def test_the_ledger_counts_each_event_once_for_every_view() -> None:
    """The report, the JSON lines and an API listener all see one record."""
    out, seen = io.StringIO(), []
    ledger = Ledger([seen.append])
    JsonLines(ledger, out)
    run_events(ledger)
    ledger.record(Finished(spec("b.fits"), "downloaded", 1000, resumed=200))
    ledger.record(Finished(spec("c.fits"), "failed", 1000, "s3://b/p/c.fits: lost"))
    report = ledger.report
    assert (report.downloaded, report.skipped, report.retries) == (1, 1, 1)
    assert report.failed == [{"name": "c.fits", "error": "s3://b/p/c.fits: lost"}]
    assert report.fetched_bytes == 800 and report.unverified == ["b.fits"]
    assert len(seen) == 11 and isinstance(seen[0], Planned)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "planned",
        "skipped",
        "retry",
        "downloaded",
        "failed",
    ]
    assert lines[-1]["error"] == "s3://b/p/c.fits: lost" and lines[-1]["name"] == "c.fits"


def test_view_kind_follows_the_output() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True)
    pipe = Console(file=io.StringIO(), force_terminal=False)
    assert type(make_view(Ledger(), terminal, quiet=True)) is View
    assert type(make_view(Ledger(), terminal, quiet=False)) is Dashboard
    assert type(make_view(Ledger(), pipe, quiet=False)) is PlainLines
    # stdout redirected (`> plan.json`, `| tee`): no live view on the stderr terminal
    assert type(make_view(Ledger(), terminal, False, stdout_is_terminal=False)) is PlainLines
    assert type(make_view(Ledger(), terminal, False, "json")) is JsonLines


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
