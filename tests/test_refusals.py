"""Bad input: a one-line error naming what and where, exit 2, and nothing written.

Each test breaks one thing in an otherwise good bucket and checks that the run
stops before touching the cache, which here already holds a valid synced cache
that must come through byte for byte.
"""

import gzip
import hashlib
import json
import pprint
import subprocess
import sys
from base64 import b64encode
from pathlib import Path

import pytest
from conftest import RULES, Bucket, files_under, final_lines

from crds_s3_sync.demo import encode_metadata
from crds_s3_sync.rules.server_config import decode_download_metadata, parse_server_config


def snapshot(root: Path) -> dict[str, str]:
    return {
        name: hashlib.sha1((root / name).read_bytes()).hexdigest() for name in files_under(root)
    }


@pytest.fixture
def synced(make_bucket, cli, tmp_path: Path) -> tuple[Bucket, Path, dict[str, str]]:
    """A good bucket and a cache synced from it, with its contents recorded."""
    bucket = make_bucket("roman")
    cache = tmp_path / "cache"
    assert cli(*bucket.args(), "--all", "--cache", cache, "-q").exit_code == 0
    return bucket, cache, snapshot(cache)


def assert_refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = final_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crds-s3-sync: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def put(s3, bucket: Bucket, path: str, data: bytes | str) -> None:
    body = data.encode() if isinstance(data, str) else data
    s3.put_object(Bucket=bucket.name, Key=f"{bucket.prefix}/{path}", Body=body)


def server_config(s3, bucket: Bucket) -> dict:
    key = f"{bucket.prefix}/config/{bucket.observatory}/server_config"
    text = s3.get_object(Bucket=bucket.name, Key=key)["Body"].read().decode()
    return parse_server_config(text, key).raw


def put_mapping(s3, bucket: Bucket, name: str, text: str) -> None:
    """Replace a mapping and record its true size and SHA-1, as a tampered bucket would."""
    config = server_config(s3, bucket)
    decoded = decode_download_metadata(config["download_metadata"], "test")
    metadata = {entry: (meta.size, meta.sha1) for entry, meta in decoded.items()}
    metadata[name] = (len(text.encode()), hashlib.sha1(text.encode()).hexdigest())
    config["download_metadata"] = encode_metadata(metadata)
    put(s3, bucket, f"config/{bucket.observatory}/server_config", pprint.pformat(config))
    put(s3, bucket, f"mappings/{bucket.observatory}/{name}", text)


IMAP = (RULES / "mappings/roman/roman_wfi_0006.imap").read_text()
RMAP = (RULES / "mappings/roman/roman_wfi_dark_0001.rmap").read_text()


def test_missing_bucket(synced, cli) -> None:
    bucket, cache, before = synced
    result = cli(*bucket.args(), "--bucket", "no-such-bucket-here", "--cache", cache)
    assert_refused(result, "no-such-bucket-here", "no such bucket")
    assert snapshot(cache) == before


def test_wrong_prefix(synced, cli) -> None:
    bucket, cache, before = synced
    result = cli(*bucket.args(), "--prefix", "elsewhere", "--cache", cache)
    assert_refused(result, f"s3://{bucket.name}/elsewhere/config/roman/server_config")
    assert snapshot(cache) == before


def test_unknown_context_writes_nothing(make_bucket, cli, tmp_path: Path) -> None:
    bucket = make_bucket("roman")
    result = cli(*bucket.args(), "--context", "roman_9999.pmap", "--cache", tmp_path / "c")
    assert_refused(result, "roman_9999.pmap", "no such context")
    assert files_under(tmp_path) == set()


def test_no_credentials_for_a_private_bucket(make_bucket, cli, tmp_path, monkeypatch) -> None:
    bucket = make_bucket("roman", public=False)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = cli(*bucket.args(), "--cache", tmp_path / "c")
    assert_refused(result, "access denied", "no AWS credentials")
    assert files_under(tmp_path) == set()


def test_public_bucket_needs_no_credentials(make_bucket, cli, tmp_path, monkeypatch) -> None:
    bucket = make_bucket("roman", public=True)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = cli(*bucket.args(), "--all", "--cache", tmp_path / "c", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["downloaded"] == len(bucket.references) + 19 + 1


def config_with_payload(payload: str) -> str:
    return repr(
        {
            "observatory": "roman",
            "operational_context": "roman_0001.pmap",
            "download_metadata": {"crds_encoded": "1.0", "crds_payload": payload},
        }
    )


BAD_CONFIGS = {
    "not a literal": ("{'observatory': open('x')}", "not a Python literal"),
    "a list": ("['roman']", "expected a dict"),
    "no context": ("{'observatory': 'roman', 'mappings': []}", "operational_context"),
    "mappings not a list": (
        "{'observatory': 'roman', 'operational_context': 'roman_0001.pmap', 'mappings': 'x'}",
        "'mappings' should be a list",
    ),
    "payload not base64": (config_with_payload("!!!"), "not base64 of gzip"),
    "payload not gzip": (config_with_payload(b64encode(b"hello").decode()), "not base64 of gzip"),
    "payload not JSON": (
        config_with_payload(b64encode(gzip.compress(b"{nope")).decode()),
        "not JSON",
    ),
    "bad sha1": (
        "{'observatory': 'roman', 'operational_context': 'roman_0001.pmap',"
        " 'download_metadata': {'a.asdf': {'size': '1', 'sha1sum': 'xyz'}}}",
        "bad size or sha1sum",
    ),
    "another observatory": (
        "{'observatory': 'jwst', 'operational_context': 'jwst_0001.pmap'}",
        "is for 'jwst'",
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_malformed_server_config(synced, cli, s3, case: str) -> None:
    bucket, cache, before = synced
    text, message = BAD_CONFIGS[case]
    put(s3, bucket, "config/roman/server_config", text)
    result = cli(*bucket.args(), "--cache", cache)
    assert_refused(result, "server_config", message)
    assert snapshot(cache) == before


def test_mapping_not_matching_its_sha1_is_refused(synced, cli, s3) -> None:
    bucket, cache, before = synced
    put(s3, bucket, "mappings/roman/roman_wfi_0006.imap", IMAP + "\n")
    result = cli(*bucket.args(), "--all", "--cache", cache, "--verify")
    # The cached copy is valid, so the walk trusts it; a fresh cache must fetch and refuse.
    assert result.exit_code == 0
    fresh = cache.parent / "fresh"
    result = cli(*bucket.args(), "--context", "roman_0007.pmap", "--cache", fresh)
    assert_refused(result, "roman_wfi_0006.imap", "SHA-1")
    assert not fresh.exists()
    assert snapshot(cache) == before


BAD_MAPPINGS = {
    "syntax": ("roman_wfi_0006.imap", "header = {\n", "not valid mapping syntax"),
    "os.system": (
        "roman_wfi_0006.imap",
        IMAP + "\nselector = __import__('os').system('touch MARKER')\n",
        "not a selector",
    ),
    "open": ("roman_wfi_0006.imap", IMAP + "\ncomment = open('MARKER', 'w')\n", "not a selector"),
    "other assignment": ("roman_wfi_0006.imap", IMAP + "\nx = 1\n", "only header, selector"),
    "dotdot": ("roman_wfi_0006.imap", IMAP.replace("roman_wfi_dark_0001.rmap", "../x.rmap"), ".."),
    "absolute": (
        "roman_wfi_dark_0001.rmap",
        RMAP.replace("roman_wfi_dark_0001.asdf", "/etc/passwd"),
        "path separator",
    ),
    "newline": (
        "roman_wfi_dark_0001.rmap",
        RMAP.replace("roman_wfi_dark_0001.asdf", "a\\nb.asdf"),
        "control character",
    ),
    "nul": (
        "roman_wfi_dark_0001.rmap",
        RMAP.replace("roman_wfi_dark_0001.asdf", "a\\x00b.asdf"),
        "control character",
    ),
    "escape": (
        "roman_wfi_dark_0001.rmap",
        RMAP.replace("roman_wfi_dark_0001.asdf", "a\\x1b[2Jb.asdf"),
        "control character",
    ),
    "hidden": (
        "roman_wfi_dark_0001.rmap",
        RMAP.replace("roman_wfi_dark_0001.asdf", ".bashrc"),
        "starts with '.'",
    ),
    "long": (
        "roman_wfi_dark_0001.rmap",
        RMAP.replace("roman_wfi_dark_0001.asdf", "a" * 300 + ".asdf"),
        "longer than 255",
    ),
}


@pytest.mark.parametrize("case", BAD_MAPPINGS)
def test_hostile_mapping_is_refused_and_runs_nothing(
    make_bucket, cli, s3, tmp_path: Path, monkeypatch, case: str
) -> None:
    bucket = make_bucket("roman")
    name, text, message = BAD_MAPPINGS[case]
    put_mapping(s3, bucket, name, text)
    monkeypatch.chdir(tmp_path)
    result = cli(*bucket.args(), "--context", "roman_0007.pmap", "--cache", tmp_path / "cache")
    assert_refused(result, name, message)
    assert files_under(tmp_path) == set(), "something was written"
    assert not (tmp_path / "MARKER").exists()


def test_usage_errors_exit_2(cli, tmp_path: Path) -> None:
    assert cli("--all", "--last", "2", "--cache", tmp_path).exit_code == 2
    assert cli("--last", "0", "--cache", tmp_path).exit_code == 2
    assert cli("--layout", "sideways", "--cache", tmp_path).exit_code == 2
    assert files_under(tmp_path) == set()


def test_layout_of_an_existing_cache_is_kept(synced, cli) -> None:
    bucket, cache, before = synced
    result = cli(*bucket.args(), "--all", "--cache", cache, "--layout", "instrument")
    assert_refused(result, "laid out 'flat'", "--layout flat")
    assert snapshot(cache) == before


def test_a_missing_reference_fails_alone(make_bucket, cli, s3, tmp_path: Path) -> None:
    bucket = make_bucket("roman")
    s3.delete_object(Bucket=bucket.name, Key="crds/references/roman/roman_wfi_dark_0001.asdf")
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), "--all", "--cache", cache, "--json", "-q")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [f["name"] for f in report["failed"]] == ["roman_wfi_dark_0001.asdf"]
    assert "no such object" in report["failed"][0]["error"]
    assert report["downloaded"] == report["files"] - 1
    assert not (cache / "references/roman/roman_wfi_dark_0001.asdf").exists()
    assert not [p for p in cache.rglob(".*") if p.is_file()]


def test_a_corrupt_reference_never_reaches_its_final_path(
    make_bucket, cli, s3, tmp_path: Path
) -> None:
    bucket = make_bucket("roman")
    name = "roman_wfi_flat_0004.asdf"
    good = bucket.references[name]
    put(s3, bucket, f"references/roman/{name}", bytes(b ^ 0xFF for b in good))
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), "--all", "--cache", cache, "--json", "-q")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [f["name"] for f in report["failed"]] == [name]
    assert "SHA-1" in report["failed"][0]["error"]
    assert report["retries"] >= 1
    assert not (cache / "references/roman" / name).exists()
    assert not [p for p in cache.rglob(".*") if p.is_file()]


def test_a_huge_mapping_is_refused_unread(make_bucket, cli, s3, tmp_path: Path) -> None:
    bucket = make_bucket("roman")
    padding = "# " + "x" * 100 + "\n"
    put_mapping(s3, bucket, "roman_wfi_0006.imap", IMAP + padding * (17 * 1024 * 10))
    result = cli(*bucket.args(), "--context", "roman_0007.pmap", "--cache", tmp_path / "cache")
    assert_refused(result, "roman_wfi_0006.imap", "more than the 16 MiB")
    assert files_under(tmp_path) == set()


def test_thousands_of_unexpected_keys_in_a_listing_are_ignored(
    make_bucket, cli, s3, tmp_path: Path
) -> None:
    bucket = make_bucket("roman")
    expected = json.loads(
        cli(*bucket.args(), "--all", "--cache", tmp_path / "a", "--dry-run", "--json").stdout
    )["contexts"]
    odd = ["..escape.pmap", "a\tb.pmap", ".hidden.pmap", "sub/deeper.pmap", "x" * 900 + ".pmap"]
    for index in range(2000):
        put(s3, bucket, f"mappings/roman/junk_{index:04d}.txt", b"")
    for name in odd:
        put(s3, bucket, f"mappings/roman/{name}", b"header = {}")
    result = cli(*bucket.args(), "--all", "--cache", tmp_path / "b", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["contexts"] == expected


def test_python_s_own_warnings_about_a_mapping_stay_off_stderr(make_bucket, s3, tmp_path) -> None:
    """`1if` makes Python's parser print a SyntaxWarning, which pytest would swallow
    in-process: so the real command runs, and its stderr must be the one error line."""
    bucket = make_bucket("roman")
    put_mapping(s3, bucket, "roman_wfi_0006.imap", IMAP + "\ncomment = 1if 1 else 2\n")
    command = [sys.executable, "-m", "crds_s3_sync", *bucket.args(), "--context", "roman_0007.pmap"]
    done = subprocess.run(
        [*command, "--cache", str(tmp_path / "cache")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    (line,) = final_lines(done.stderr)
    assert "roman_wfi_0006.imap" in line and "not a literal" in line
