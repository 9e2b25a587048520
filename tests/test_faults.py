"""Full syncs through a proxy that breaks requests (tests/faults.py)."""

import dataclasses
import hashlib
import json
import threading
from pathlib import Path

import anyio
import pytest
from conftest import RULES, files_under, mappings_of
from faults import TRANSIENT, FaultProxy

from crds_s3_sync.engine.ledger import Ledger
from crds_s3_sync.engine.pacer import Pacer
from crds_s3_sync.errors import SetupError, Unreachable
from crds_s3_sync.rules.mapping import parse_mapping

FLAT = "roman_wfi_flat_0004.asdf"
DARK = "roman_wfi_dark_0001.asdf"
PARTS = ["--part-size", "256K", "--multipart-threshold", "1M"]


def pick(key: str, salt: str) -> int:
    return hashlib.sha1(f"{salt}:{key}".encode()).digest()[0]


def a_third_broken_once(key: str, count: int) -> str | None:
    """A third of the references fail on their first GET, each in one of the ways a
    network fails; every later GET works."""
    if "/references/" not in key or count > 0 or pick(key, "which") % 3:
        return None
    return TRANSIENT[pick(key, "how") % len(TRANSIENT)]


class Watcher(threading.Thread):
    """Looks at every final name, all through the sync, for a file that is not the
    bucket's: a final path must only ever hold a verified file."""

    def __init__(self, directory: Path, expected: dict[str, bytes]) -> None:
        super().__init__(daemon=True)
        self.directory, self.expected = directory, expected
        self.stop, self.wrong, self.looks = threading.Event(), set(), 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.looks += 1
            for path in self.directory.glob("[!.]*") if self.directory.exists() else []:
                try:
                    if path.read_bytes() != self.expected.get(path.name):
                        self.wrong.add(path.name)
                except FileNotFoundError:
                    pass


def sync_through(proxy: FaultProxy, bucket, cache: Path, cli, *extra: str):
    args = dataclasses.replace(bucket, endpoint=proxy.url).args()
    watcher = Watcher(cache / "references" / bucket.observatory, bucket.references)
    watcher.start()
    try:
        result = cli(*args, "--cache", cache, "--json", "-q", *extra)
    finally:
        watcher.stop.set()
        watcher.join()
    assert watcher.looks > 1 and watcher.wrong == set()
    return result


NIRSPEC = "jwst_nirspec_0192.imap"  # part of jwst_0541: 32 rmaps, a few hundred references


def test_a_third_of_the_files_broken_once_all_arrive(make_bucket, cli, tmp_path) -> None:
    imap = parse_mapping(NIRSPEC, (RULES / "mappings/jwst" / NIRSPEC).read_text())
    rmap = imap.mappings[0]
    big = parse_mapping(rmap, (RULES / "mappings/jwst" / rmap).read_text()).references[0]
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", NIRSPEC), sizes={big: 3 << 20})
    cache = tmp_path / "cache"

    def plan(key: str, count: int) -> str | None:  # and a part of the big file, surely
        return "truncate" if key.endswith(big) and count == 2 else a_third_broken_once(key, count)

    with FaultProxy(bucket.endpoint, plan) as proxy:
        result = sync_through(proxy, bucket, cache, cli, "--context", NIRSPEC, *PARTS)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == []
    assert set(proxy.injected) == set(TRANSIENT), proxy.injected  # every kind was tried
    assert any(key.endswith(big) for key in proxy.by_key)
    # Each fault but a stall (which only delays) costs exactly one retry.
    assert report["retries"] == sum(proxy.injected.values()) - proxy.injected["stall"]
    fetched = {p.name: p.read_bytes() for p in (cache / "references" / "jwst").iterdir()}
    assert len(fetched) == report["files"] - 1 - 1 - len(imap.mappings)  # config, imap, rmaps
    assert fetched == {name: bucket.references[name] for name in fetched}
    assert fetched[big] == bucket.references[big]


def test_refusals_fail_their_files_alone(make_bucket, cli, tmp_path) -> None:
    bucket = make_bucket("roman")

    def refuse_two(key: str, count: int) -> str | None:
        return {DARK: "denied", FLAT: "missing"}.get(key.rsplit("/", 1)[-1])

    cache = tmp_path / "cache"
    with FaultProxy(bucket.endpoint, refuse_two) as proxy:
        result = sync_through(proxy, bucket, cache, cli, "--all")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    errors = {failure["name"]: failure["error"] for failure in report["failed"]}
    assert errors.keys() == {DARK, FLAT}
    assert "access denied" in errors[DARK] and "no such object" in errors[FLAT]
    assert report["retries"] == 0  # neither is worth another try
    refs = cache / "references" / "roman"
    assert {p.name for p in refs.iterdir()} == bucket.references.keys() - {DARK, FLAT}
    assert not [name for name in files_under(cache) if Path(name).name.startswith(".")]


def test_throttling_that_never_ends_is_given_up(make_bucket, cli, tmp_path) -> None:
    bucket = make_bucket("roman")

    def throttle_dark(key: str, count: int) -> str | None:
        return "slowdown" if key.endswith(DARK) else None

    cache = tmp_path / "cache"
    with FaultProxy(bucket.endpoint, throttle_dark) as proxy:
        result = sync_through(proxy, bucket, cache, cli, "--all", "--retry-time", "2")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [failure["name"] for failure in report["failed"]] == [DARK]
    error = report["failed"][0]["error"]
    assert "SlowDown" in error and "gave up after" in error, error
    tries = int(error.rsplit(" and ", 1)[1].split()[0])
    assert proxy.injected["slowdown"] == tries > 2
    assert report["retries"] == tries - 1
    assert not (cache / "references" / "roman" / DARK).exists()


def test_a_refused_connection_after_the_source_answered_is_retried() -> None:
    """Once the source has answered, a refused connection is a server going away for a
    while (a restart): tried again for --retry-time like any passing fault; before
    any answer it ends the run at once (test_mistakes)."""

    async def refused() -> bytes:
        raise Unreachable("s3://b/k: connection refused", "http://127.0.0.1:9", "refused")

    async def answered() -> bytes:
        return b"server_config"

    async def main() -> None:
        async with Pacer(4, Ledger(), retry_time=0.6) as pacer:
            with pytest.raises(SetupError, match=r"cannot reach http://127.0.0.1:9: refused"):
                await pacer.call("s3://b/k", refused)
            assert await pacer.call("s3://b/config", answered) == b"server_config"
            with pytest.raises(Unreachable, match=r"gave up after [\d.]+ s and \d+ tries"):
                await pacer.call("s3://b/k", refused)

    anyio.run(main)
