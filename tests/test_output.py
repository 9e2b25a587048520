"""What the command tells, off a terminal: one line per event, nothing wrapped,
one JSON document on stdout with --json whatever happens, numbers of this run."""

import json
import os
import re
import socket
import subprocess
import sys
import threading

import pytest
from conftest import final_lines

CONTEXT = ["--context", "roman_0007.pmap"]


@pytest.fixture
def bucket(make_bucket):
    return make_bucket("roman")


def test_a_long_summary_is_one_line(bucket, cli, tmp_path) -> None:
    cache = tmp_path / ("a-cache-under-a-long-name-" * 4)
    result = cli(*bucket.args(), "--cache", cache, *CONTEXT)
    assert result.exit_code == 0, result.stderr
    (summary,) = [line for line in result.stderr.splitlines() if line.startswith("Synced ")]
    assert len(summary) > 120 and str(cache) in summary


def test_rates_count_what_this_run_fetched(bucket, cli, tmp_path) -> None:
    args = (*bucket.args(), "--cache", tmp_path / "cache", *CONTEXT, "--json")
    first = json.loads(cli(*args).stdout)
    assert first["fetched_bytes"] == first["bytes"] > 0
    again = cli(*args[:-1])
    (summary,) = [line for line in again.stderr.splitlines() if line.startswith("Synced ")]
    assert "0 downloaded" in summary and "0 bytes fetched" in summary
    assert json.loads(cli(*args).stdout)["fetched_bytes"] == 0


def test_dry_run_says_what_it_would_fetch_and_lists_it(bucket, cli, tmp_path) -> None:
    cache = tmp_path / "cache"
    plan = json.loads(cli(*bucket.args(), "--cache", cache, *CONTEXT, "--dry-run", "--json").stdout)
    refs = [f for f in plan["plan"] if f["kind"] == "reference"]
    cli(*bucket.args(), "--cache", cache, *CONTEXT)
    for gone in refs[:3]:
        (cache / gone["path"]).unlink()

    dry = cli(*bucket.args(), "--cache", cache, *CONTEXT, "--dry-run")
    assert dry.exit_code == 0
    assert sorted(dry.stdout.split()) == sorted(f["path"] for f in refs[:3])
    assert "3 to download" in dry.stderr and f"{plan['files'] - 3} already valid" in dry.stderr
    assert all((cache / f["path"]).exists() for f in refs[3:])


def test_dry_run_refuses_what_the_real_run_refuses(bucket, cli, tmp_path) -> None:
    cache = tmp_path / "cache"
    assert cli(*bucket.args(), "--cache", cache, *CONTEXT).exit_code == 0
    dry = cli(*bucket.args(), "--cache", cache, *CONTEXT, "--layout", "instrument", "--dry-run")
    assert dry.exit_code == 2 and "laid out 'flat'" in dry.stderr


def test_repair_counts_what_it_fetched_and_what_was_valid(bucket, cli, tmp_path) -> None:
    cache = tmp_path / "cache"
    plan = json.loads(cli(*bucket.args(), "--cache", cache, *CONTEXT, "--json").stdout)
    refs = sorted((cache / "references" / "roman").iterdir())
    refs[0].unlink()
    repaired = cli(*bucket.args(), "--cache", cache, *CONTEXT, "--repair")
    assert repaired.exit_code == 0, repaired.stderr
    (summary,) = [line for line in repaired.stderr.splitlines() if line.startswith("Repaired ")]
    assert f"1 of {plan['files']} files missing or corrupt, 1 fetched" in summary
    assert f"{plan['files'] - 1} already valid" in summary


@pytest.mark.parametrize(
    "args",
    [["--bucket", "no-such-bucket-anywhere"], ["--jobs", "0"]],
    ids=["source-error", "usage-error"],
)
def test_json_holds_one_document_even_for_an_error(endpoint, cli, tmp_path, args) -> None:
    result = cli(*args, "--endpoint-url", endpoint, "--cache", tmp_path, "--json")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["exit"] == 2 and document["error"]
    assert not document["error"].startswith("error:")


def test_json_log_format_makes_an_error_an_event(endpoint, cli, tmp_path) -> None:
    result = cli(
        "--bucket",
        "no-such-bucket-anywhere",
        "--endpoint-url",
        endpoint,
        "--cache",
        tmp_path,
        "--log-format",
        "json",
    )
    assert result.exit_code == 2
    event = json.loads(final_lines(result.stderr)[-1])
    assert event["event"] == "error" and event["exit"] == 2
    assert "no-such-bucket-anywhere" in event["message"]


def test_help_reads_well_at_80_columns(cli, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = cli("--help")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "<bool>" not in result.stdout
    flags = {line.split()[0] for line in lines if line.strip().startswith("--")}
    assert {"--all", "--verify", "--json", "--dry-run"} <= flags
    all_line = next(line for line in lines if line.strip().startswith("--all "))
    assert all_line.split()[1] == "Every"  # a flag shows no value
    assert "Exit status:" in result.stdout and "Examples:" in result.stdout


def test_shell_completion_is_available() -> None:
    """The script bash would install, and bash's question answered: what completes
    `--veri`."""
    command = [sys.executable, "-m", "crds_s3_sync"]
    # The shell named, not detected: whatever runs the tests may not be a shell.
    named = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = subprocess.run(
        [*command, "--show-completion", "bash"],
        capture_output=True,
        text=True,
        check=False,
        env=named,
    )
    assert shown.returncode == 0 and "complete -o default" in shown.stdout
    variable = re.search(r"(_[A-Z0-9_]+_COMPLETE)=complete_bash", shown.stdout).group(1)
    answer = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, variable: "complete_bash", "COMP_WORDS": "x --veri", "COMP_CWORD": "1"},
    )
    assert answer.stdout.split() == ["--verify"]


def test_a_stalled_endpoint_is_never_silent(tmp_path) -> None:
    """An endpoint that accepts and never answers: the run says what it reads, says
    what it waits for once a read timeout passes, retries, and gives up in one line."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])  # read nothing, answer nothing
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        options = ["--bucket", "quiet", "--no-sign-request", "--endpoint-url", endpoint]
        options += ["--cache", str(tmp_path), "--timeout", "1", "--retry-time", "4"]
        done = subprocess.run(
            [sys.executable, "-m", "crds_s3_sync", *options],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        server.close()
        for connection in held:
            connection.close()
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert lines[0] == "reading s3://quiet/config/roman/server_config"
    assert any(
        line.startswith("no answer for ") and "s3://quiet/config/roman/server_config" in line
        for line in lines
    ), done.stderr
    assert any(line.startswith("retrying (") for line in lines)
    assert lines[-1].startswith("crds-s3-sync: error: ") and "gave up after" in lines[-1]


def test_problems_found_exit_1_for_every_action_also_dry(bucket, cli, tmp_path) -> None:
    cache = tmp_path / "cache"
    assert cli(*bucket.args(), "--cache", cache, *CONTEXT).exit_code == 0
    sorted((cache / "references" / "roman").iterdir())[0].unlink()
    for action in (["--check"], ["--repair", "--dry-run"]):
        result = cli(*bucket.args(), "--cache", cache, *CONTEXT, *action)
        assert result.exit_code == 1, (action, result.stderr)
    assert cli(*bucket.args(), "--cache", cache, *CONTEXT, "--repair").exit_code == 0
    assert cli(*bucket.args(), "--cache", cache, *CONTEXT, "--check").exit_code == 0
