"""CI warm-up and shared caches: cache keys, check and repair, purge, shards, locks."""

import ast
import json
import os
import pprint
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Bucket, files_under, mappings_of, overwrite_unseen, read_until

from crds_s3_sync.engine.whole import IN_MEMORY

DARK = "roman_wfi_dark_0001.asdf"


def run(cli, bucket: Bucket, cache: Path, *extra: str, code: int = 0, env=None) -> dict:
    result = cli(*bucket.args(), "--cache", cache, "--json", "-q", *extra, env=env)
    assert result.exit_code == code, result.stderr
    return json.loads(result.stdout)


def key_of(cli, bucket: Bucket, cache: Path, *extra: str) -> str:
    result = cli(*bucket.args(), "--cache", cache, "--print-key", *extra)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    return lines[0]


def planned(cli, bucket: Bucket, cache: Path, *extra: str) -> dict[str, dict]:
    report = run(cli, bucket, cache, "--dry-run", *extra)
    return {entry["path"]: entry for entry in report["plan"]}


# -- --print-key ----------------------------------------------------------------------------


def test_the_key_follows_the_files_and_nothing_else(make_bucket, cli, s3, tmp_path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    key = key_of(cli, bucket, cache, "--last", "2")
    assert key.startswith("crds-roman-flat-")
    assert not cache.exists()  # nothing fetched, nothing written

    # Same selection, same key: again, from a warm cache, and named instead of counted.
    run(cli, bucket, cache, "--last", "2")
    assert key_of(cli, bucket, cache, "--last", "2") == key
    contexts = ("--context", "roman_0006.pmap", "--context", "roman_0007.pmap")
    assert key_of(cli, bucket, tmp_path / "elsewhere", *contexts) == key

    # Another selection or layout: another key.
    assert key_of(cli, bucket, tmp_path / "c2", "--last", "3") != key
    assert key_of(cli, bucket, tmp_path / "c3", "--last", "2", "--layout", "instrument") != key

    # server_config changes that name no file (its timestamps) keep the key ...
    config_key = f"{bucket.prefix}/config/roman/server_config"
    config = ast.literal_eval(
        s3.get_object(Bucket=bucket.name, Key=config_key)["Body"].read().decode()
    )
    config["last_synced"] = "2099-01-01 00:00:00"
    s3.put_object(Bucket=bucket.name, Key=config_key, Body=pprint.pformat(config).encode())
    assert key_of(cli, bucket, tmp_path / "c4", "--last", "2") == key

    # ... a reference whose content (SHA-1) changes does not.
    from crds_s3_sync.demo import encode_metadata
    from crds_s3_sync.rules.server_config import decode_download_metadata

    metadata = decode_download_metadata(config["download_metadata"], "test")
    changed = {n: (m.size, m.sha1) for n, m in metadata.items()}
    changed[DARK] = (changed[DARK][0], "0" * 40)
    config["download_metadata"] = encode_metadata(changed)
    s3.put_object(Bucket=bucket.name, Key=config_key, Body=pprint.pformat(config).encode())
    assert key_of(cli, bucket, tmp_path / "c5", "--last", "2") != key


# -- --check, --repair ----------------------------------------------------------------------


def test_check_finds_what_is_wrong_and_repair_fetches_exactly_that(
    make_bucket, cli, tmp_path
) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    run(cli, bucket, cache, "--all")
    refs = cache / "references" / "roman"
    names = sorted(p.name for p in refs.iterdir())
    missing, short, flipped = names[:3]
    (refs / missing).unlink()
    (refs / short).write_bytes((refs / short).read_bytes()[:-1])
    data = bytearray((refs / flipped).read_bytes())
    data[0] ^= 0xFF
    overwrite_unseen(refs / flipped, bytes(data))
    before = {name: (cache / name).read_bytes() for name in files_under(cache)}

    by_size = run(cli, bucket, cache, "--all", "--check", code=1)["problems"]
    assert {(p["name"], p["problem"]) for p in by_size} == {
        (missing, "missing"),
        (short, "corrupt"),
    }
    by_hash = run(cli, bucket, cache, "--all", "--check", "--verify", code=1)["problems"]
    assert {p["name"] for p in by_hash} == {missing, short, flipped}
    assert {name: (cache / name).read_bytes() for name in files_under(cache)} == before

    text = cli(*bucket.args(), "--cache", cache, "--all", "--check", "-q")
    assert text.exit_code == 1
    assert f"missing references/roman/{missing} (not in the cache)" in text.stdout.splitlines()

    repaired = run(cli, bucket, cache, "--all", "--repair", "--verify")
    assert repaired["downloaded"] == 3 and repaired["failed"] == []
    assert run(cli, bucket, cache, "--all", "--check", "--verify")["problems"] == []
    for name in (missing, short, flipped):
        assert (refs / name).read_bytes() == bucket.references[name]


# -- --purge --------------------------------------------------------------------------------


def test_purge_removes_only_what_the_selection_does_not_need(make_bucket, cli, tmp_path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    run(cli, bucket, cache, "--all")
    outside = [
        cache / "config" / "roman" / "extra.txt",  # config/ is crds's, never purged
        cache / "references" / "jwst" / "jwst_other.fits",  # another observatory
        cache / "notes.txt",
    ]
    for path in outside:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep me")
    stale_part = cache / "references" / "roman" / ".roman_wfi_gone_0001.asdf.part"
    stale_part.write_bytes(b"x")
    everything = files_under(cache)
    keep = set(planned(cli, bucket, tmp_path / "plan", "--last", "1"))

    listed = run(cli, bucket, cache, "--last", "1", "--purge", "--dry-run")["purged"]
    assert files_under(cache) == everything  # a dry run removes nothing
    purged = run(cli, bucket, cache, "--last", "1", "--purge")["purged"]
    assert purged == listed and purged
    assert str(stale_part.relative_to(cache)) in purged
    assert files_under(cache) == everything - set(purged)
    for name in purged:
        assert name.startswith(("mappings/roman/", "references/roman/", "pickles/roman/"))
        assert name not in keep
    assert all(path.read_text() == "keep me" for path in outside)
    assert run(cli, bucket, cache, "--last", "1", "--check", "--verify")["problems"] == []


def test_purge_with_a_partial_plan_keeps_what_the_selection_needs(
    make_bucket, cli, tmp_path
) -> None:
    """A shard or a rules-only plan fetches part of the selection; a purge beside it
    still keeps every file of the whole selection."""
    bucket = make_bucket("roman")
    assert cli(*bucket.args(), "--cache", tmp_path, "--all").exit_code == 0
    needed = files_under(tmp_path)
    for extra in (["--shard", "1/2"], ["--mappings-only"]):
        stray = tmp_path / "references" / "roman" / "roman_wfi_stray_0001.asdf"
        stray.write_bytes(b"no context needs me")
        result = cli(*bucket.args(), "--cache", tmp_path, "--all", "--purge", *extra)
        assert result.exit_code == 0, result.stderr
        assert result.stdout.split() == ["references/roman/roman_wfi_stray_0001.asdf"]
        assert files_under(tmp_path) == needed


# -- --shard --------------------------------------------------------------------------------


IMAPS = ["jwst_nirspec_0191.imap", "jwst_nirspec_0192.imap", "jwst_miri_0177.imap"]
TWO = ["--context", IMAPS[0], "--context", IMAPS[1]]  # overlapping: mostly the same rmaps


def test_shards_split_the_plan_stably_and_fill_one_cache(make_bucket, cli, tmp_path) -> None:
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", *IMAPS))
    scratch = tmp_path / "plans"
    whole = planned(cli, bucket, scratch, *TWO)
    shards = [planned(cli, bucket, scratch, *TWO, "--shard", f"{k}/3") for k in (1, 2, 3)]
    assert set().union(*shards) == set(whole)
    config = "config/jwst/server_config"
    for i, one in enumerate(shards):
        assert config in one
        assert 0.2 * len(whole) < len(one) < 0.5 * len(whole)  # about a third each
        for other in shards[i + 1 :]:
            assert set(one) & set(other) == {config}
    # A bigger plan keeps every file in its shard.
    bigger = planned(cli, bucket, scratch, *TWO, "--context", IMAPS[2], "--shard", "2/3")
    assert set(shards[1]) < set(bigger)

    cache = tmp_path / "cache"
    for k in (1, 2, 3):
        run(cli, bucket, cache, *TWO, "--shard", f"{k}/3")
    assert run(cli, bucket, cache, *TWO, "--check", "--verify")["problems"] == []


@pytest.mark.parametrize("bad", ["0/3", "4/3", "x", "1/0", "2"])
def test_a_bad_shard_is_a_usage_error(make_bucket, cli, tmp_path, bad: str) -> None:
    bucket = make_bucket("roman")
    result = cli(*bucket.args(), "--cache", tmp_path, "--shard", bad)
    assert result.exit_code == 2
    assert bad in result.stderr


# -- several processes, one cache ---------------------------------------------------------


def command(bucket: Bucket, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "crds_s3_sync", *bucket.args(), "--cache", str(cache), *extra]


def test_concurrent_syncs_share_a_cache(make_bucket, cli, tmp_path, file_system) -> None:
    bucket = make_bucket("jwst", mappings=mappings_of("jwst", *IMAPS))
    cache = file_system / "cache"
    selections = [TWO, ["--context", IMAPS[1]], ["--context", IMAPS[2], *TWO], TWO]
    runs = [
        subprocess.Popen(
            command(bucket, cache, *selection, "--json", "-q", "--jobs", "8"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for selection in selections
    ]
    reports = []
    for process in runs:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        reports.append(json.loads(out))
    union = set().union(*(planned(cli, bucket, tmp_path / "plan", *s) for s in selections))
    # Small files are fetched without a lock: one may be fetched by two runs, each into
    # its own temporary name, but every file of the union was fetched.
    assert len(union) <= sum(report["downloaded"] for report in reports) <= 4 * len(union)
    for report in reports:
        assert report["downloaded"] + report["skipped"] == report["files"]
    check = subprocess.run(
        command(bucket, cache, *TWO, "--context", IMAPS[2], "--check", "--verify", "-q"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert not [name for name in files_under(cache) if Path(name).name.startswith(".")]


HOLD_LOCK = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def test_a_held_lock_waits_and_a_dead_holders_lock_does_not(make_bucket, file_system) -> None:
    bucket = make_bucket("roman", sizes={DARK: 2 * IN_MEMORY})  # big enough to be locked
    cache = file_system / "cache"
    target = cache / "references" / "roman" / DARK
    target.parent.mkdir(parents=True)
    lock = target.with_name(f".{DARK}.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        sync = subprocess.Popen(command(bucket, cache, "--all"), stderr=subprocess.PIPE, text=True)
        said = read_until(sync.stderr, "another process is fetching it; waiting for it")
        assert said[-1].startswith(f"{target}: ")  # never silent about what it waits for
        assert sync.poll() is None and not target.exists()  # the locked file waits
        holder.kill()  # dies holding the lock: the kernel drops it
        holder.wait()
        assert sync.wait(timeout=60) == 0
    finally:
        holder.kill()
        holder.wait()
    assert target.read_bytes() == bucket.references[DARK]
    assert not lock.exists()


# -- output for machines --------------------------------------------------------------------


def test_json_log_lines(make_bucket, cli, tmp_path) -> None:
    bucket = make_bucket("roman")
    result = cli(
        *bucket.args(), "--cache", tmp_path / "cache", "--last", "1", "--log-format", "json"
    )
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    kinds = [event["event"] for event in events]
    planned = kinds.index("planned")
    assert planned >= 3 and set(kinds[:planned]) == {"note"}  # what planning read
    downloaded = {event["name"] for event in events if event["event"] == "downloaded"}
    assert downloaded and all(isinstance(event["time"], float) for event in events)
    assert events[planned]["files"] == len(downloaded)


def test_no_color_is_honoured(make_bucket, s3, tmp_path) -> None:
    bucket = make_bucket("roman")
    s3.delete_object(Bucket=bucket.name, Key=f"{bucket.prefix}/references/roman/{DARK}")
    env = os.environ | {"FORCE_COLOR": "1"}
    colored = subprocess.run(
        command(bucket, tmp_path / "a", "--all"),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert colored.returncode == 1
    assert "\x1b[" in colored.stderr  # forced colour does colour the failure line
    plain = subprocess.run(
        command(bucket, tmp_path / "b", "--all"),
        capture_output=True,
        text=True,
        env=env | {"NO_COLOR": "1"},
        check=False,
    )
    assert plain.returncode == 1
    (failure,) = [line for line in plain.stderr.splitlines() if line.startswith("failed: ")]
    assert failure.count(DARK) == 1  # named once
    assert "\x1b[" not in plain.stderr
