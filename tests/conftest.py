"""Shared fixtures: a real S3 API (moto's server on 127.0.0.1) and buckets built
from the real CRDS rules files vendored in tests/data."""

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from crds_s3_sync.cli.app import app
from crds_s3_sync.demo import build_bucket
from crds_s3_sync.rules.mapping import parse_mapping

RULES = Path(__file__).parent / "data"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Never let botocore look for credentials on the network (instance metadata).
NO_NETWORK_CREDENTIALS = {"AWS_EC2_METADATA_DISABLED": "true"}
# Variables a developer's shell may carry that would change what the CLI does.
CLEARED = [
    name
    for name in os.environ
    if name.startswith(("CRDS_", "AWS_")) and name not in NO_NETWORK_CREDENTIALS
]


def reference_size(name: str) -> int:
    """Small synthetic references, 0.5 to 8 KiB, varied by name."""
    return 512 + hashlib.sha1(name.encode()).digest()[0] * 30


@pytest.fixture(scope="session")
def endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**CREDENTIALS, **NO_NETWORK_CREDENTIALS}.items():
        monkeypatch.setenv(name, value)
    # No developer's ~/.aws may leak in.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3(endpoint: str, clean_environment: None):
    return boto3.client("s3", endpoint_url=endpoint)


@dataclass
class Bucket:
    """A bucket on the test server laid out like STScI's: PREFIX/{config,mappings,references}."""

    name: str
    prefix: str
    observatory: str
    endpoint: str
    references: dict[str, bytes]

    def args(self) -> list[str]:
        return [
            "--bucket",
            self.name,
            "--prefix",
            self.prefix,
            "--observatory",
            self.observatory,
            "--endpoint-url",
            self.endpoint,
        ]


MakeBucket = Callable[..., Bucket]


@pytest.fixture
def make_bucket(s3, endpoint: str) -> MakeBucket:
    def make(
        observatory: str = "roman",
        *,
        public: bool = False,
        prefix: str = "crds",
        mappings: list[str] | None = None,
        rules: Path = RULES,
        sizes: dict[str, int] | None = None,
        pickles: dict[str, bytes] | None = None,
        operational: str | None = None,
        contents: dict[str, bytes] | None = None,
    ) -> Bucket:
        """`sizes` overrides the synthetic size of named references; `pickles` makes an
        HST-style bucket ({context: pickle}, no mappings); `operational` names the
        server_config's operational context."""
        name = f"test-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=name)

        def size_of(ref: str) -> int:
            return (sizes or {}).get(ref) or reference_size(ref)

        refs = build_bucket(
            s3,
            name,
            prefix,
            rules,
            observatory,
            size_of,
            public=public,
            mappings=mappings,
            pickles=pickles,
            operational=operational,
            contents=contents,
        )
        return Bucket(name, prefix, observatory, endpoint, refs)

    return make


@pytest.fixture
def cli() -> Callable[..., "CliResult"]:
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> CliResult:
        result = runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return invoke


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def interruptible() -> None:
    """`preexec_fn` for a child a test will interrupt: Ctrl-C's default handling, which
    a shell that started the tests in the background (bash ignores SIGINT there) or a
    CI runner may have left ignored, and a child inherits."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def command_line(
    environment: dict[str, str], *args: object, timeout: float = 120
) -> subprocess.CompletedProcess:
    """The command as a user's shell runs it, in a process of its own with `environment`."""
    return subprocess.run(
        [sys.executable, "-m", "crds_s3_sync", *map(str, args)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def interrupt_after_parts(
    args: list[str], record: Path, parts: int, sig: signal.Signals, env: dict[str, str]
) -> int:
    """Run the command with `args` (a sync of a big file a part at a time); send `sig`
    once `record` (the file's parts record) says `parts` parts are done; return its
    exit status (waiting at most 20 s for it to end)."""
    command = [sys.executable, "-m", "crds_s3_sync", *args]
    run = subprocess.Popen(command, env=env, preexec_fn=interruptible)
    try:
        deadline = time.monotonic() + 60
        done: list[int] = []
        while len(done) < parts and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.01)
            with contextlib.suppress(OSError, ValueError):
                done = json.loads(record.read_text())["done"]
        assert len(done) >= parts, "the run never got going"
        run.send_signal(sig)
        return run.wait(timeout=20)
    finally:
        run.kill()
        run.wait()


# Lines a run prints as it goes (planning notes, progress, retries, waits), as
# opposed to what it says about how it ended.
_PROGRESS = re.compile(
    r"(reading |planned |retrying \(|no answer for |\d+/\d+ files, |[\d,]+ files? to fetch )"
)


def read_until(stream, text: str, timeout: float = 60) -> list[str]:
    """Lines from `stream` (a child's pipe) up to the first that holds `text`: a test
    waits for the event it needs, never for a guessed time. Fails after `timeout`."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in stream:
            lines.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"no line with {text!r} within {timeout} s: {lines}"
    return lines


def final_lines(stderr: str) -> list[str]:
    """stderr without the lines a run prints as it goes: what it said at the end."""
    return [line for line in stderr.strip().splitlines() if not _PROGRESS.match(line)]


FILE_SYSTEMS = ["disk", "tmpfs", "ext4-image"]


@pytest.fixture(params=FILE_SYSTEMS)
def file_system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A directory on each kind of file system this machine offers a cache: the
    test directory's own, a tmpfs, and a loop-mounted ext4 image. The last two are
    mounted for the test, which takes root; otherwise they are skipped, saying why."""
    kind = request.param
    if kind == "disk":
        yield tmp_path
        return
    if os.geteuid() != 0:
        pytest.skip(f"{kind}: mounting a file system for the test needs root")
    mount = tmp_path / kind
    mount.mkdir()
    if kind == "tmpfs":
        command = ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)]
    else:
        image = tmp_path / "ext4.img"
        with image.open("wb") as stream:
            stream.truncate(256 << 20)
        made = subprocess.run(["mkfs.ext4", "-q", str(image)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"{kind}: mkfs.ext4 failed: {made.stderr.strip()}")
        command = ["mount", "-o", "loop", str(image), str(mount)]
    mounted = subprocess.run(command, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"{kind}: cannot mount here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def overwrite_unseen(path: Path, data: bytes) -> None:
    """Rewrite `path` in place, then give it back its modification time: a change
    only a SHA-1 can find (as a copy that keeps times may bring)."""
    before = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def files_under(root: Path) -> set[str]:
    """Every file below `root`, relative, to compare a cache before and after."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def mappings_of(observatory: str, *imaps: str) -> list[str]:
    """The imaps and every rmap they name: a small bucket for tests that need many
    files but not whole contexts (``make_bucket(obs, mappings=...)``)."""
    names = set(imaps)
    for imap in imaps:
        text = (RULES / "mappings" / observatory / imap).read_text()
        names.update(parse_mapping(imap, text).mappings)
    return sorted(names)


def run_crds(
    script: str, crds_path: Path, observatory: str, request: dict, timeout: float, **env: str
) -> dict:
    """Run `script` (Python using the crds client) offline against the cache at
    `crds_path`, with the JSON `request` as argv[1]; return its last line as JSON.

    crds keeps process-wide state, so each question gets a fresh interpreter. Its
    server URL contains "serverless", which crds takes as "never call the server",
    and the host does not exist anyway.
    """
    environ = {name: value for name, value in os.environ.items() if not name.startswith("CRDS_")}
    environ |= {
        "CRDS_PATH": str(crds_path),
        "CRDS_MODE": "local",
        "CRDS_SERVER_URL": f"https://{observatory}-crds-serverless.stsci.edu",
        "CRDS_OBSERVATORY": observatory,
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(request)],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])
