"""crds sync's habits: its spellings with its meanings, the layout a cache already
has, the observatory a context's name gives, contexts named by path or URL."""

import json

import pytest
from conftest import final_lines, overwrite_unseen

CONTEXT = "roman_0007.pmap"


@pytest.fixture
def bucket(make_bucket):
    return make_bucket("roman")


def run(cli, bucket, cache, *args: str):
    result = cli(*bucket.args(), "--cache", cache, *args, "--json")
    document = json.loads(result.stdout)
    return result, document


def test_an_existing_layout_is_adopted_unless_contradicted(bucket, cli, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first, _ = run(cli, bucket, cache, "--context", CONTEXT, "--layout", "instrument")
    assert first.exit_code == 0, first.stderr
    again, document = run(cli, bucket, cache, "--context", CONTEXT)  # no --layout
    assert again.exit_code == 0, again.stderr
    assert document["downloaded"] == 0 and document["skipped"] == document["files"]
    monkeypatch.setenv("CRDS_REF_SUBDIR_MODE", "flat")
    refused, document = run(cli, bucket, cache, "--context", CONTEXT)
    assert refused.exit_code == 2 and "laid out 'instrument'" in document["error"]


def test_the_observatory_comes_from_the_context_name(make_bucket, cli, tmp_path) -> None:
    jwst = make_bucket("jwst")
    args = ["--bucket", jwst.name, "--prefix", jwst.prefix, "--endpoint-url", jwst.endpoint]
    result = cli(*args, "--cache", tmp_path, "--context", "jwst_0541.pmap", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["key"].startswith("crds-jwst-")


def test_context_names_as_arguments_mean_context(make_bucket, bucket, cli, tmp_path) -> None:
    """`crds-s3-sync NAME...`, as crds's own commands take contexts; the observatory
    follows from the names, as with --context."""
    _, flagged = run(cli, bucket, tmp_path, "--context", "roman_0006.pmap", "--context", CONTEXT)
    result, named = run(cli, bucket, tmp_path, "roman_0006.pmap", CONTEXT, "--print-key")
    assert result.exit_code == 0, result.stderr
    assert named["contexts"] == ["roman_0006.pmap", CONTEXT] and named["key"] == flagged["key"]
    jwst = make_bucket("jwst")
    args = ["--bucket", jwst.name, "--prefix", jwst.prefix, "--endpoint-url", jwst.endpoint]
    result = cli(*args, "jwst_0541.pmap", "--cache", tmp_path / "j", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["key"].startswith("crds-jwst-")


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("roman_0070.pmap", "no such context; nearest known: roman_0007.pmap"),
        ("roman_0005", "expected a .pmap, .imap or .rmap name; nearest known: roman_0005.pmap"),
        ("jw01234_uncal.fits", "jw01234_uncal.fits is a dataset file, not a context"),
    ],
)
def test_a_name_that_is_no_context_is_one_line(bucket, cli, tmp_path, given, said) -> None:
    result = cli(*bucket.args(), "--cache", tmp_path / "cache", given)
    assert result.exit_code == 2
    (line,) = final_lines(result.stderr)
    assert said in line, line
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("spelled", [f"/some/dir/{CONTEXT}", f"s3://elsewhere/crds/{CONTEXT}"])
def test_a_context_given_by_path_or_url_is_its_file_name(bucket, cli, tmp_path, spelled) -> None:
    _, plain = run(cli, bucket, tmp_path, "--context", CONTEXT, "--print-key")
    result, document = run(cli, bucket, tmp_path, "--context", spelled, "--print-key")
    assert result.exit_code == 0, result.stderr
    assert document["key"] == plain["key"] and document["contexts"] == [CONTEXT]


def test_crds_selections_fetch_rules_unless_asked_for_references(bucket, cli, tmp_path):
    rules, document = run(cli, bucket, tmp_path / "a", "--contexts", "roman_0006.pmap", CONTEXT)
    assert rules.exit_code == 0, rules.stderr
    assert document["contexts"] == ["roman_0006.pmap", CONTEXT]
    assert (tmp_path / "a/mappings/roman" / CONTEXT).exists()
    assert not (tmp_path / "a/references").exists()

    both, document = run(
        cli, bucket, tmp_path / "b", "--last-n-contexts", "2", "--fetch-references"
    )
    assert both.exit_code == 0, both.stderr
    assert len(document["contexts"]) == 2
    assert any((tmp_path / "b/references/roman").iterdir())


def test_crds_check_and_repair_spellings(bucket, cli, tmp_path) -> None:
    cache = tmp_path / "cache"
    run(cli, bucket, cache, "--context", CONTEXT)
    victim = sorted((cache / "references/roman").iterdir())[0]
    overwrite_unseen(victim, b"x" * victim.stat().st_size)  # same size, wrong bytes

    by_size, _ = run(cli, bucket, cache, "--context", CONTEXT, "-k")
    assert by_size.exit_code == 0
    by_sha1, document = run(cli, bucket, cache, "--context", CONTEXT, "-s")
    assert by_sha1.exit_code == 1
    assert [p["name"] for p in document["problems"]] == [victim.name]
    repaired, document = run(cli, bucket, cache, "--context", CONTEXT, "-s", "-r")
    assert repaired.exit_code == 0 and document["downloaded"] == 1
    assert run(cli, bucket, cache, "--context", CONTEXT, "-s")[0].exit_code == 0


def test_crds_purges_follow_the_sync(bucket, cli, tmp_path) -> None:
    cache = tmp_path / "cache"
    run(cli, bucket, cache, "--context", "roman_0006.pmap")
    old_only = {p.name for p in (cache / "references/roman").iterdir()}
    result, document = run(
        cli, bucket, cache, "--contexts", CONTEXT, "--purge-mappings", "--purge-references"
    )
    assert result.exit_code == 0, result.stderr
    mappings = {p.name for p in (cache / "mappings/roman").iterdir()}
    assert CONTEXT in mappings and "roman_0006.pmap" not in mappings
    # Rules only were fetched, yet references the context needs are kept: only the
    # ones no selected context needs go.
    _, needed = run(cli, bucket, cache, "--context", CONTEXT, "--dry-run")
    wanted = {f["name"] for f in needed["plan"] if f["kind"] == "reference"}
    kept = {p.name for p in (cache / "references/roman").iterdir()}
    assert kept == old_only & wanted
    assert {p.split("/")[-1] for p in document["purged"]} >= (old_only - wanted)


def test_organize_moves_the_cache_between_layouts(bucket, cli, tmp_path) -> None:
    cache = tmp_path / "cache"
    run(cli, bucket, cache, "--context", CONTEXT)
    stray = cache / "references/roman/oddly-named.asdf"
    stray.write_bytes(b"instrument unknown")
    flat = {p.name for p in (cache / "references/roman").iterdir()}

    moved, document = run(cli, bucket, cache, "--context", CONTEXT, "--organize", "instrument")
    assert moved.exit_code == 0, moved.stderr
    assert document["downloaded"] == 0 and document["skipped"] == document["files"]
    assert "of no known instrument left in place" in moved.stderr
    tag = cache / "config/roman/ref_cache_subdir_mode"
    assert tag.read_text() == "instrument"
    _, plan = run(cli, bucket, cache, "--context", CONTEXT, "--dry-run")
    for spec in plan["plan"]:
        assert (cache / spec["path"]).is_file(), spec["path"]
    assert stray.exists()  # left where it was, and said so

    back, document = run(cli, bucket, cache, "--context", CONTEXT, "--organize", "flat")
    assert back.exit_code == 0 and document["downloaded"] == 0, back.stderr
    assert tag.read_text() == "flat"
    assert {p.name for p in (cache / "references/roman").iterdir()} == flat
