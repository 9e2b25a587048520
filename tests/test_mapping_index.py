"""Re-runs plan from what earlier runs parsed (mapping_index), and only while it is
still true: same name, same SHA-1 in server_config, the cached file's size."""

import hashlib
import json
import pprint
from pathlib import Path

from conftest import RULES, Bucket

from crds_s3_sync.cache import last_plan
from crds_s3_sync.cache.mapping_index import NAME, VERSION
from crds_s3_sync.demo import encode_metadata, synthetic_reference
from crds_s3_sync.rules.server_config import decode_download_metadata, parse_server_config

RMAP = "roman_wfi_dark_0001.rmap"


def plan(cli, bucket: Bucket, cache: Path, *extra: str) -> dict:
    """A run planned from the mappings and this index: the last run's plan, which the
    same command would reuse under the same server_config (`last_plan`), set aside."""
    (cache / "config/roman" / last_plan.NAME).unlink(missing_ok=True)
    result = cli(*bucket.args(), "--cache", cache, "--all", "--json", "-q", *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def index_of(cache: Path) -> dict:
    return json.loads((cache / "config/roman" / NAME).read_text())["mappings"]


def test_the_index_gives_the_plan_parsing_gives(make_bucket, cli, tmp_path: Path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    parsed = plan(cli, bucket, cache, "--dry-run", "--layout", "instrument")["plan"]
    assert not (cache / "config/roman" / NAME).exists()  # a dry run writes nothing
    plan(cli, bucket, cache, "--layout", "instrument")
    index = index_of(cache)
    mappings = sorted(p.name for p in (RULES / "mappings/roman").iterdir())
    assert sorted(index) == mappings
    for name in mappings:
        assert (
            index[name]["sha1"]
            == hashlib.sha1((RULES / "mappings/roman" / name).read_bytes()).hexdigest()
        )
    assert plan(cli, bucket, cache, "--dry-run", "--layout", "instrument")["plan"] == parsed


def test_a_changed_mapping_is_parsed_again(make_bucket, cli, s3, tmp_path: Path) -> None:
    """The bucket gets a new version of an rmap under the same name, naming one more
    reference: server_config's new SHA-1 retires the remembered parse."""
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    plan(cli, bucket, cache)
    text = (RULES / "mappings/roman" / RMAP).read_text()
    extra = "roman_wfi_dark_9999.asdf"
    changed = text.replace("})", f"    ('X', 'Y') : '{extra}',\n}})", 1)
    assert changed != text
    base = f"{bucket.prefix}/"
    config_key = f"{base}config/roman/server_config"
    config = parse_server_config(
        s3.get_object(Bucket=bucket.name, Key=config_key)["Body"].read().decode(), "t"
    ).raw
    metadata = {
        k: (m.size, m.sha1)
        for k, m in decode_download_metadata(config["download_metadata"], "t").items()
    }
    reference = synthetic_reference(extra, 700)
    metadata[RMAP] = (len(changed.encode()), hashlib.sha1(changed.encode()).hexdigest())
    metadata[extra] = (len(reference), hashlib.sha1(reference).hexdigest())
    config["download_metadata"] = encode_metadata(metadata)
    s3.put_object(Bucket=bucket.name, Key=config_key, Body=pprint.pformat(config).encode())
    s3.put_object(Bucket=bucket.name, Key=f"{base}mappings/roman/{RMAP}", Body=changed.encode())
    s3.put_object(Bucket=bucket.name, Key=f"{base}references/roman/{extra}", Body=reference)

    report = plan(cli, bucket, cache)
    assert report["downloaded"] == 3  # server_config, the new rmap, the reference it names
    assert (cache / "references/roman" / extra).read_bytes() == reference
    assert index_of(cache)[RMAP]["references"].split("\n").count(extra) == 1


def test_a_damaged_index_is_ignored_and_rewritten(make_bucket, cli, tmp_path: Path) -> None:
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    first = plan(cli, bucket, cache, "--dry-run")["plan"]
    plan(cli, bucket, cache)
    path = cache / "config/roman" / NAME
    index = index_of(cache)
    index[RMAP]["references"] = "../../escape.asdf"  # names are checked again on use
    path.write_text(json.dumps({"version": VERSION, "mappings": index}))
    assert plan(cli, bucket, cache, "--dry-run")["plan"] == first
    path.write_text("{not json")
    assert plan(cli, bucket, cache)["skipped"] == len(first)
    assert index_of(cache)[RMAP]["references"] != "../../escape.asdf"
