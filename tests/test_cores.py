"""One event loop per core: helper processes fetch shares of the small files, and
the person sees one run.

The CLI runs as a process of its own (helpers are forked only where no thread
exists yet, so an in-process run never has any) through the fault proxy, which
notes each client connection; the test finds which process holds each one in
/proc, so "a helper fetched files" is observed, not assumed.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import files_under, final_lines, interruptible, mappings_of
from faults import FaultProxy

NIRSPEC = "jwst_nirspec_0192.imap"  # a few hundred references: enough to share

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
    reason="helpers are forked only on Linux with two usable cores or more",
)


def command(bucket, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "crds_s3_sync", *bucket.args(), "--cache", str(cache), *extra]


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (the helpers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *map(int, children)]


def owners(ports: set[int], pids: list[int]) -> dict[int, int]:
    """Which of `pids` holds the TCP connection whose local port is each of `ports`."""
    inodes = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        port = int(fields[1].split(":")[1], 16)
        if port in ports:
            inodes[f"socket:[{fields[9]}]"] = port
    found = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link in inodes:
                    found[inodes[link]] = pid
        except OSError:  # it exited meanwhile
            continue
    return found


class Watched:
    """A sync through the fault proxy whose every GET is traced to the process
    that sent it; `faults` maps object names to the fault their first GET gets."""

    def __init__(self, bucket, cache: Path, faults: dict[str, str] | None = None) -> None:
        self.bucket, self.cache, self.faults = bucket, cache, faults or {}
        self.fetchers: dict[int, int] = {}  # port -> pid
        self.process: subprocess.Popen | None = None

    def plan(self, key: str, attempt: int) -> str | None:
        if self.process is not None and key.split("/")[1] == "references":
            unknown = self.proxy.client_ports - set(self.fetchers)
            if unknown:
                self.fetchers |= owners(unknown, process_tree(self.process.pid))
        return self.faults.get(key.rsplit("/", 1)[1]) if attempt == 0 else None

    def run(self, *extra: str) -> tuple[int, dict]:
        self.proxy = FaultProxy(self.bucket.endpoint, self.plan)
        with self.proxy:
            args = dataclasses.replace(self.bucket, endpoint=self.proxy.url)
            self.process = subprocess.Popen(
                command(args, self.cache, "--context", NIRSPEC, "--json", *extra),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            out, err = self.process.communicate(timeout=120)
        assert out, err
        return self.process.returncode, json.loads(out)


def test_helpers_fetch_shares_and_the_report_is_one(make_bucket, tmp_path) -> None:
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC))
    refs = sorted(bucket.references)
    missing = set(refs[1:40:7])
    throttled = set(refs[2:40:5]) - missing
    faults = {name: "missing" for name in missing} | {name: "slowdown" for name in throttled}
    watched = Watched(bucket, tmp_path / "cache", faults)

    code, report = watched.run("--processes", "2", "--jobs", "8", "--retry-time", "30")

    assert len(set(watched.fetchers.values())) == 2, "references came from one process only"
    assert code == 1
    assert {failure["name"] for failure in report["failed"]} == missing
    assert report["retries"] >= len(throttled)
    assert report["downloaded"] == report["files"] - len(missing)
    for name in set(refs) - missing:
        assert (tmp_path / "cache/references/jwst" / name).read_bytes() == bucket.references[name]
    assert not [name for name in files_under(tmp_path / "cache") if name.endswith(".tmp")]


@pytest.mark.parametrize(
    "options",
    [["--processes", "1"], ["--processes", "2", "--jobs", "1"]],
    ids=["one-process", "one-request-at-a-time"],
)
def test_one_process_when_asked(make_bucket, tmp_path, options: list[str]) -> None:
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC))
    watched = Watched(bucket, tmp_path / "cache")
    code, report = watched.run(*options)
    assert code == 0 and report["downloaded"] == report["files"]
    assert set(watched.fetchers.values()) == {watched.process.pid}


def test_json_lines_name_every_file_once_whichever_process_fetched_it(
    make_bucket, tmp_path
) -> None:
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC))
    done = subprocess.run(
        command(bucket, tmp_path / "cache", "--context", NIRSPEC, "--log-format", "json"),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    downloaded = [event["name"] for event in events if event["event"] == "downloaded"]
    assert sorted(downloaded) == sorted(set(downloaded))
    assert set(bucket.references) <= set(downloaded)
    (summary,) = [event for event in events if event["event"] == "summary"]
    assert summary["downloaded"] == len(downloaded)


def leftover_processes(cache: Path) -> list[int]:
    """Processes whose command line names `cache`: helpers outliving their run."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(cache).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("how", ["ctrl-c", "kill-main"])
def test_helpers_stop_with_their_run_and_leave_no_debris(make_bucket, tmp_path, how) -> None:
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC))
    cache = tmp_path / "cache"
    seen = {"n": 0}
    process: dict[str, subprocess.Popen] = {}

    def plan(key: str, attempt: int) -> str | None:
        """At the 80th reference GET, once a helper exists: Ctrl-C at a terminal
        reaches the whole process group; SIGKILL reaches the main process only."""
        if key.split("/")[1] == "references":
            seen["n"] += 1
            it = process["it"]
            if seen["n"] == 80 and len(process_tree(it.pid)) > 1:
                if how == "ctrl-c":
                    os.killpg(it.pid, signal.SIGINT)
                else:
                    os.kill(it.pid, signal.SIGKILL)
            if seen["n"] > 80:
                time.sleep(0.01)  # slow the rest, so that they are still in flight
        return None

    proxy = FaultProxy(bucket.endpoint, plan)
    with proxy:
        args = dataclasses.replace(bucket, endpoint=proxy.url)
        process["it"] = subprocess.Popen(
            command(args, cache, "--context", NIRSPEC, "--processes", "2", "--jobs", "8"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: (interruptible(), os.setsid()),
        )
        _, err = process["it"].communicate(timeout=120)
        deadline = time.monotonic() + 10
        while leftover_processes(cache) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert seen["n"] >= 80
    assert process["it"].returncode == (130 if how == "ctrl-c" else -signal.SIGKILL), err
    if how == "ctrl-c":
        (line,) = final_lines(err)
        assert line.startswith("crds-s3-sync: interrupted; ")
    assert leftover_processes(cache) == []
    hidden = [name for name in files_under(cache) if Path(name).name.startswith(".")]
    if how == "kill-main":
        # A killed process cleans nothing: the files it had written and not yet
        # flushed and renamed stay, under its temporary names; the next run on this
        # host, seeing that process gone, removes them.
        again = subprocess.run(
            command(bucket, cache, "--context", NIRSPEC, "-q"), capture_output=True, check=False
        )
        assert again.returncode == 0, again.stderr
        hidden = [name for name in files_under(cache) if Path(name).name.startswith(".")]
    assert hidden == []
    for name in files_under(cache / "references"):
        assert (cache / "references" / name).read_bytes() == bucket.references[Path(name).name]
