"""The same command under the same server_config plans nothing (`last_plan`): the last
run's plan is used, and only while it is the plan of this command and server_config."""

import json
from pathlib import Path

from conftest import RULES, Bucket, files_under

from crds_s3_sync.cache import last_plan
from crds_s3_sync.cache.mapping_index import NAME as INDEX

PMAP = "roman_0004.pmap"


def run(cli, bucket: Bucket, cache: Path, *extra: str) -> dict:
    result = cli(*bucket.args(), "--cache", cache, "--json", "-q", *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_a_rerun_takes_the_plan_from_the_last_run(make_bucket, cli, s3, tmp_path: Path) -> None:
    """Shown by taking a context out of the bucket, and putting it back, behind
    server_config's back: a re-run neither lists the bucket nor reads a mapping, so
    its plan is the last run's; without the mapping index, or with --verify, a run
    plans afresh, from what the bucket holds now."""
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    key = f"{bucket.prefix}/mappings/roman/{PMAP}"
    first = run(cli, bucket, cache, "--all")
    assert PMAP in first["contexts"]
    s3.delete_object(Bucket=bucket.name, Key=key)

    again = run(cli, bucket, cache, "--all")
    assert (again["key"], again["files"], again["downloaded"]) == (first["key"], first["files"], 0)
    assert again["skipped"] == first["files"]
    (cache / "config/roman" / INDEX).unlink()
    assert PMAP not in run(cli, bucket, cache, "--all")["contexts"]

    s3.put_object(Bucket=bucket.name, Key=key, Body=(RULES / "mappings/roman" / PMAP).read_bytes())
    assert PMAP not in run(cli, bucket, cache, "--all")["contexts"]
    assert PMAP in run(cli, bucket, cache, "--all", "--verify")["contexts"]


def test_another_command_is_planned_for_itself(make_bucket, cli, tmp_path: Path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    every = run(cli, bucket, cache, "--all", "--dry-run")
    run(cli, bucket, cache, "--all")
    last = run(cli, bucket, cache, "--last", "1", "--dry-run")
    assert last["contexts"] == every["contexts"][-1:]
    assert last["files"] < every["files"]
    named = run(cli, bucket, cache, "--context", every["contexts"][0], "--dry-run")
    assert named["contexts"] == every["contexts"][:1]


def test_a_tampered_record_is_not_used(make_bucket, cli, tmp_path: Path) -> None:
    """Names in the record are checked again; a record that is not what this tool
    writes is no record. Either way the run plans afresh, and the plan is right."""
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    first = run(cli, bucket, cache, "--all")
    path = cache / "config/roman" / last_plan.NAME
    record = json.loads(path.read_text())
    kind, _, *rest = record["files"].split("\n")[-1].split("\t")
    record["files"] += "\n" + "\t".join([kind, "../../escape.asdf", *rest])
    path.write_text(json.dumps(record))
    before = files_under(tmp_path)
    for damage in (None, "{not json"):
        if damage:
            path.write_text(damage)
        again = run(cli, bucket, cache, "--all")
        assert (again["key"], again["files"]) == (first["key"], first["files"])
    assert files_under(tmp_path) == before  # nothing escaped; the record rewritten in place
    assert "escape" not in path.read_text()
