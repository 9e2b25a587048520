"""The Python API: the functions the command is built on, called as a test suite
or a pipeline would, against the same moto server."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import files_under

import crds_s3_sync
from crds_s3_sync import aio

EXAMPLE = Path(__file__).parent.parent / "examples" / "conftest_crds_cache.py"


def where(bucket) -> dict:
    return {
        "bucket": bucket.name,
        "prefix": bucket.prefix,
        "observatory": bucket.observatory,
        "endpoint_url": bucket.endpoint,
    }


def test_sync_fills_the_cache_and_says_how_crds_finds_it(make_bucket, tmp_path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    result = crds_s3_sync.sync(**where(bucket), cache=cache, contexts=["roman_0007.pmap"])
    assert result.report.downloaded == len(result.plan) > 10
    for spec in result.plan:
        if spec.kind == "reference":
            assert (cache / spec.path).read_bytes() == bucket.references[spec.name]
    assert result.environment["CRDS_PATH"] == str(cache)
    assert result.environment["CRDS_OBSERVATORY"] == "roman"
    assert result.environment["CRDS_MODE"] == "local"
    key = crds_s3_sync.cache_key(**where(bucket), cache=cache, contexts=["roman_0007.pmap"])
    assert key == result.key

    again = crds_s3_sync.sync(**where(bucket), cache=cache, contexts=["roman_0007.pmap"])
    assert again.report.downloaded == 0 and again.report.skipped == len(again.plan)


def test_on_event_sees_the_events_the_counts_come_from(make_bucket, tmp_path) -> None:
    """A notebook's own progress: the same events the command's views read."""
    bucket = make_bucket("roman")
    seen: list[crds_s3_sync.events.Event] = []
    options = {**where(bucket), "cache": tmp_path / "cache", "contexts": ["roman_0007.pmap"]}
    result = crds_s3_sync.sync(**options, on_event=seen.append)
    planned = [e for e in seen if isinstance(e, crds_s3_sync.events.Planned)]
    finished = [e for e in seen if isinstance(e, crds_s3_sync.events.Finished)]
    assert [p.files for p in planned] == [len(result.plan)]
    assert sorted(e.spec.name for e in finished) == sorted(s.name for s in result.plan)
    assert {e.outcome for e in finished} == {"downloaded"}
    received = sum(e.bytes for e in seen if isinstance(e, crds_s3_sync.events.Received))
    assert received == result.report.downloaded_bytes == sum(s.size for s in result.plan)
    assert any(isinstance(e, crds_s3_sync.events.Note) for e in seen)

    async def again() -> list[crds_s3_sync.events.Event]:
        more: list[crds_s3_sync.events.Event] = []
        await aio.sync(**options, on_event=more.append)
        return more

    more = asyncio.run(again())
    outcomes = [e.outcome for e in more if isinstance(e, crds_s3_sync.events.Finished)]
    assert outcomes == ["skipped"] * len(result.plan)


def test_plan_check_repair_and_purge(make_bucket, tmp_path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    options = {**where(bucket), "cache": cache, "contexts": ["roman_0007.pmap"]}

    planned = crds_s3_sync.plan(**options)
    assert planned.plan and not (cache / "references").exists()

    crds_s3_sync.sync(**options)
    victim = next(s for s in planned.plan if s.kind == "reference")
    path = cache / victim.path
    before = path.stat()
    path.write_bytes(b"x" * (victim.size or 1))  # right size, wrong bytes
    (problem,) = crds_s3_sync.check(**options).problems  # changed since verified: re-hashed
    assert problem.spec.name == victim.name and problem.kind == "corrupt"
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the change hidden
    assert crds_s3_sync.check(**options).problems == []  # by size and record
    (problem,) = crds_s3_sync.check(**options, verify=True).problems
    assert problem.spec.name == victim.name and problem.kind == "corrupt"
    repaired = crds_s3_sync.repair(**options, verify=True)
    assert repaired.report.downloaded == 1
    assert (cache / victim.path).read_bytes() == bucket.references[victim.name]

    stray = cache / "references" / "roman" / "roman_wfi_stray_0001.asdf"
    stray.write_bytes(b"not needed")
    purged = crds_s3_sync.purge(**options)
    assert [p.name for p in purged.purged] == [stray.name] and not stray.exists()


def test_failed_files_raise_one_type_that_carries_them(make_bucket, tmp_path, s3) -> None:
    bucket = make_bucket("roman")
    options = {**where(bucket), "cache": tmp_path / "cache", "contexts": ["roman_0007.pmap"]}
    gone = sorted(s.name for s in crds_s3_sync.plan(**options).plan if s.kind == "reference")[:2]
    for name in gone:
        s3.delete_object(Bucket=bucket.name, Key=f"{bucket.prefix}/references/roman/{name}")
    with pytest.raises(crds_s3_sync.FilesFailed) as caught:
        crds_s3_sync.sync(**options, retry_time=1)
    assert isinstance(caught.value, crds_s3_sync.SyncError)
    assert sorted(f["name"] for f in caught.value.failed) == gone
    assert caught.value.result.report.downloaded == len(caught.value.result.plan) - 2


def test_mistakes_raise_sync_error_naming_the_option(tmp_path) -> None:
    with pytest.raises(crds_s3_sync.SyncError, match="layout='sideways'"):
        crds_s3_sync.plan(cache=tmp_path, layout="sideways")
    with pytest.raises(crds_s3_sync.SyncError, match="jobs=0"):
        crds_s3_sync.plan(cache=tmp_path, jobs=0)
    with pytest.raises(crds_s3_sync.SyncError, match="at most one"):
        crds_s3_sync.plan(cache=tmp_path, last=2, all=True)
    with pytest.raises(TypeError, match="colour"):
        crds_s3_sync.plan(cache=tmp_path, colour="blue")


async def test_async_forms_run_inside_a_running_loop(make_bucket, tmp_path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    result = await aio.sync(**where(bucket), cache=cache, contexts=["roman_0007.pmap"])
    assert result.report.downloaded == len(result.plan)
    assert await aio.cache_key(**where(bucket), cache=cache, contexts=["roman_0007.pmap"]) == (
        result.key
    )
    with pytest.raises(crds_s3_sync.SyncError, match="await"):
        crds_s3_sync.sync(**where(bucket), cache=cache)


def test_the_functions_are_not_shadowed_by_submodules() -> None:
    """Whatever is imported first, `crds_s3_sync.sync` and friends stay functions."""
    names = ["sync", "plan", "check", "repair", "purge", "cache_key"]
    script = (
        "import importlib, pkgutil, json, crds_s3_sync as p\n"
        "for m in pkgutil.iter_modules(p.__path__):\n"
        "    if m.name != '__main__':  # that one runs the command\n"
        "        importlib.import_module('crds_s3_sync.' + m.name)\n"
        f"print(json.dumps({{n: callable(getattr(p, n)) and not hasattr(getattr(p, n), '__path__')"
        f" and type(getattr(p, n)).__name__ == 'function' for n in {names!r}}}))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert json.loads(done.stdout) == dict.fromkeys(names, True), done.stderr


def test_the_example_fixture_warms_a_cache_for_a_test_suite(make_bucket, tmp_path) -> None:
    bucket = make_bucket("roman")
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(EXAMPLE.read_text())
    (suite / "test_uses_cache.py").write_text(
        "import os\n"
        "def test_cache(crds_cache):\n"
        "    assert os.environ['CRDS_PATH'] == str(crds_cache)\n"
        "    assert os.environ['CRDS_MODE'] == 'local'\n"
        "    assert any((crds_cache / 'references').rglob('*.asdf'))\n"
    )
    env = {
        "CRDS_S3_BUCKET": bucket.name,
        "CRDS_S3_PREFIX": bucket.prefix,
        "CRDS_OBSERVATORY": "roman",
        "AWS_ENDPOINT_URL": bucket.endpoint,
        "CRDS_S3_SYNC_CACHE": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=suite,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert any(name.endswith(".asdf") for name in files_under(tmp_path / "cache"))


def test_crds_reads_the_cache_with_exactly_the_environment_given(make_bucket, tmp_path) -> None:
    """`result.environment`, and nothing else of crds's, is all crds needs offline:
    `crds list --status` and a best-reference lookup, as README's "Use the cache"
    says."""
    from test_crds_agreement import BESTREFS

    bucket = make_bucket("roman")
    result = crds_s3_sync.sync(**where(bucket), cache=tmp_path / "cache")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRDS_")}
    env |= result.environment
    status = subprocess.run(
        [sys.executable, "-m", "crds.list", "--status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert str(tmp_path / "cache") in status.stdout and "local" in status.stdout
    lookup = BESTREFS["roman"]
    script = (
        "import json, sys, crds\n"
        "parameters, reftype = json.loads(sys.argv[1]), sys.argv[2]\n"
        "found = crds.getreferences(parameters, reftypes=[reftype], observatory='roman')\n"
        "print(json.dumps(found))"  # romancal passes its observatory, as here
    )
    found = subprocess.run(
        [sys.executable, "-c", script, json.dumps(lookup["parameters"]), lookup["reftype"]],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    path = Path(json.loads(found.stdout.strip().splitlines()[-1])[lookup["reftype"]])
    assert path == tmp_path / "cache/references/roman" / lookup["expected"] and path.is_file()
