"""Every mistake a user can make in calling or configuring the tool: one line on
stderr, `crds-s3-sync: error: ...`, naming what is wrong, and exit 2; never a
traceback, never exit 1 (which means "files failed"). A fault of the tool itself
is one line naming where its traceback went, and exit 3."""

import socket
import time
from pathlib import Path

import pytest
from conftest import final_lines

MISTAKES = {
    # flag values
    "jobs zero": (["--jobs", "0"], {}, "--jobs"),
    "jobs not a number": (["--jobs", "many"], {}, "--jobs"),
    "last zero": (["--last", "0"], {}, "--last"),
    "processes zero": (["--processes", "0"], {}, "--processes"),
    "part size unit": (["--part-size", "12Q"], {}, "size"),
    "part size zero": (["--part-size", "0"], {}, "at least one byte"),
    "threshold unit": (["--multipart-threshold", "1X"], {}, "size"),
    "shard out of range": (["--shard", "3/2"], {}, "K must be"),
    "shard not K/N": (["--shard", "x"], {}, "K/N"),
    "layout unknown": (["--layout", "sideways"], {}, "--layout"),
    "log format unknown": (["--log-format", "xml"], {}, "--log-format"),
    "env unknown": (["--env", "nope"], {}, "--env"),
    "flag given a value": (["--all", "true"], {}, "true"),
    "unknown flag": (["--fast"], {}, "--fast"),
    "two selections": (["--all", "--last", "2"], {}, "at most one"),
    # configuration
    "observatory unknown": (["--observatory", "mars"], {}, "mars"),
    "layout from the environment": ([], {"CRDS_REF_SUBDIR_MODE": "bogus"}, "bogus"),
    "endpoint without scheme": (["--endpoint-url", "127.0.0.1:5056"], {}, "127.0.0.1:5056"),
    "endpoint with another scheme": (["--endpoint-url", "ftp://x"], {}, "ftp://x"),
    "profile missing": ([], {"AWS_PROFILE": "nope"}, "nope"),
    "key without secret": (
        ["--bucket", "a-private-bucket"],
        {"AWS_SECRET_ACCESS_KEY": "", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"},
        "AWS_SECRET_ACCESS_KEY",
    ),
}
# Mistakes that need the test bucket: (arguments after the bucket's, expected text).
ON_A_BUCKET = {
    "no such context": (["--context", "roman_9999.pmap"], "roman_9999.pmap"),
    "context with a path": (["--context", "../../etc/passwd"], "passwd"),
    "context not a mapping": (["--context", "notes.txt"], "notes.txt"),
    "cache is a file": (["--cache", "{file}", "--context", "roman_0007.pmap"], "{file}"),
    "cache not writable": (
        ["--cache", "/proc/crds-cache", "--context", "roman_0007.pmap"],
        "/proc",
    ),
}


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = final_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crds-s3-sync: error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert "Input should" not in lines[0]  # the tool's words, not its validator's
    return lines[0]


@pytest.mark.parametrize("name", MISTAKES)
def test_a_mistake_is_one_line_and_exit_2(cli, tmp_path, monkeypatch, name: str) -> None:
    args, env, says = MISTAKES[name]
    for key, value in env.items():
        monkeypatch.setenv(key, value) if value else monkeypatch.delenv(key, raising=False)
    result = cli(*args, "--cache", tmp_path / "cache", "--dry-run")
    assert says in one_error_line(result)


@pytest.mark.parametrize("name", ON_A_BUCKET)
def test_a_mistake_about_the_bucket_is_one_line(make_bucket, cli, tmp_path, name: str) -> None:
    bucket = make_bucket("roman")
    (tmp_path / "a-file").write_text("not a directory")
    args, says = ON_A_BUCKET[name]
    args = [a.replace("{file}", str(tmp_path / "a-file")) for a in args]
    if "--cache" not in args:
        args += ["--cache", str(tmp_path / "cache")]
    result = cli(*bucket.args(), *args)
    assert says.replace("{file}", str(tmp_path / "a-file")) in one_error_line(result)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.fits"))


def test_missing_bucket_is_one_line(s3, endpoint, cli, tmp_path) -> None:
    result = cli("--bucket", "no-such-bucket-here", "--endpoint-url", endpoint, "--cache", tmp_path)
    assert "no-such-bucket-here" in one_error_line(result)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (a typo'd port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("endpoint", "cause"),
    [
        (f"http://127.0.0.1:{closed_port()}", "connection refused"),
        ("http://crds-s3-sync-test.invalid:9000", "the host name does not resolve"),
    ],
)
def test_an_endpoint_that_cannot_be_reached_ends_the_run_at_once(
    cli, tmp_path, endpoint: str, cause: str
) -> None:
    """Before the source has answered anything, these are mistakes, not passing faults:
    not retried for --retry-time (120 s by default), as they would be later in a run."""
    start = time.monotonic()
    result = cli("--endpoint-url", endpoint, "--no-sign-request", "--cache", tmp_path / "cache")
    line = one_error_line(result)
    assert f"cannot reach {endpoint}: {cause} (3 tries)" in line, line
    assert time.monotonic() - start < 20
    assert not (tmp_path / "cache").exists()


def test_a_cache_that_cannot_be_written_is_found_before_any_request(cli, tmp_path) -> None:
    """Local mistakes first: with an endpoint nothing answers, the cache is what is named."""
    (tmp_path / "a-file").write_text("not a directory")
    endpoint = f"http://127.0.0.1:{closed_port()}"
    for cache, says in ((tmp_path / "a-file", "not a directory"), ("/proc/crds", "cannot create")):
        result = cli("--endpoint-url", endpoint, "--no-sign-request", "--cache", cache)
        line = one_error_line(result)
        assert str(cache) in line and says in line and "cannot reach" not in line, line


def test_reading_actions_need_no_writable_cache(make_bucket, cli) -> None:
    bucket = make_bucket("roman")
    for action in ("--dry-run", "--check", "--print-key"):
        result = cli(*bucket.args(), "--cache", "/proc/crds", "roman_0007.pmap", action)
        assert result.exit_code in (0, 1), (action, result.stderr)  # 1: --check found it empty
        assert "writable" not in result.stderr


def test_an_internal_error_says_where_its_traceback_is(cli, tmp_path, monkeypatch) -> None:
    """A fault injected where no user input can reach: the tool's own bug."""

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("crds_s3_sync.run.options.resolve_settings", broken)
    result = cli("--cache", tmp_path / "cache", "--dry-run")
    assert result.exit_code == 3
    (line,) = final_lines(result.stderr)
    assert line.startswith("crds-s3-sync: internal error: ZeroDivisionError: a bug; ")
    path = line.split("the traceback is in ")[1].split(" ")[0]
    assert "ZeroDivisionError" in Path(path).read_text()

    shown = cli("--cache", tmp_path / "cache", "--dry-run", "--debug")
    assert shown.exit_code == 3 and "Traceback (most recent call last)" in shown.stderr


def test_processes_is_accepted_with_a_note(make_bucket, cli, tmp_path) -> None:
    """An option that lost its meaning (one process fetches everything) still works
    in old scripts, and says once that it is ignored."""
    bucket = make_bucket("roman")
    result = cli(*bucket.args(), "--cache", tmp_path / "cache", "--last", "1", "--processes", "4")
    assert result.exit_code == 0, result.stderr
    (note,) = [line for line in result.stderr.splitlines() if "--processes" in line]
    assert "ignored" in note
