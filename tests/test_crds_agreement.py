"""The walker and the cache agree with the official crds client.

crds is the reference implementation of what a context needs and of where a
cache keeps it; these tests ask it, in a subprocess and offline, about the same
real contexts the walker reads and about caches the CLI has just written.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from conftest import RULES

from crds_s3_sync.walker import walk

PROBE = Path(__file__).with_name("crds_probe.py")
ROMAN = [f"roman_{i:04d}.pmap" for i in range(1, 8)]
JWST = [f"jwst_{i:04d}.pmap" for i in range(537, 542)]


def ask_crds(cache: Path, observatory: str, contexts: list[str], locate: bool = False) -> dict:
    """crds's view of `cache`, offline: the server URL is unreachable on purpose."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CRDS_")} | {
        "CRDS_PATH": str(cache),
        "CRDS_MODE": "local",
        "CRDS_SERVER_URL": f"https://{observatory}-crds-serverless.stsci.edu",
        "CRDS_OBSERVATORY": observatory,
        # roman_wfi_epsf_0001.rmap's header sha1sum is wrong in the real rules.
        "CRDS_IGNORE_MAPPING_CHECKSUM": "1",
        "PROBE_LOCATE": "1" if locate else "0",
    }
    done = subprocess.run(
        [sys.executable, str(PROBE), observatory, *contexts],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def crds_rules_view(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """crds's mapping_names()/reference_names() for every vendored context."""
    views = {}
    for observatory, contexts in (("roman", ROMAN), ("jwst", JWST)):
        cache = tmp_path_factory.mktemp(f"crds-{observatory}")
        (cache / "mappings").symlink_to(RULES / "mappings")  # read only
        shutil.copytree(RULES / "config", cache / "config")  # crds writes here
        views.update(ask_crds(cache, observatory, contexts)["contexts"])
    return views


def walk_vendored(observatory: str, contexts: list[str]):
    async def fetch(name: str) -> bytes:
        return (RULES / "mappings" / observatory / name).read_bytes()

    return anyio.run(walk, contexts, fetch, 8)


@pytest.mark.parametrize("context", ROMAN + JWST)
def test_walker_names_equal_crds_names(context: str, crds_rules_view: dict) -> None:
    observatory = context.split("_")[0]
    result = walk_vendored(observatory, [context])
    assert sorted(result.mappings) == crds_rules_view[context]["mappings"]
    assert sorted(result.references) == crds_rules_view[context]["references"]


def test_walking_several_contexts_gives_their_union(crds_rules_view: dict) -> None:
    result = walk_vendored("jwst", JWST)
    expected_mappings = set().union(*(crds_rules_view[c]["mappings"] for c in JWST))
    expected_refs = set().union(*(crds_rules_view[c]["references"] for c in JWST))
    assert set(result.mappings) == expected_mappings
    assert set(result.references) == expected_refs
    # The figures measured on the real data: a walk that found nothing could not pass.
    assert (len(expected_mappings), len(expected_refs)) == (139, 1800)


@pytest.mark.parametrize("layout", ["flat", "instrument"])
@pytest.mark.parametrize(
    ("observatory", "selection", "contexts"),
    [
        ("roman", ["--all"], ROMAN),
        ("jwst", ["--context", "jwst_0540.pmap", "--context", "jwst_0541.pmap"], JWST[-2:]),
    ],
)
def test_crds_finds_every_synced_file_offline(
    make_bucket,
    cli,
    tmp_path: Path,
    layout: str,
    observatory: str,
    selection: list[str],
    contexts: list[str],
) -> None:
    bucket = make_bucket(observatory)
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), *selection, "--cache", cache, "--layout", layout, "--quiet")
    assert result.exit_code == 0, result.stderr

    view = ask_crds(cache, observatory, contexts, locate=True)
    assert view["subdir_mode"] == layout
    assert view["operational_context"].startswith(f"{observatory}_")
    for context in contexts:
        located = view["contexts"][context]["located"]
        assert len(located) == len(view["contexts"][context]["mappings"]) + len(
            view["contexts"][context]["references"]
        )
        for name, path in located.items():
            path = Path(path)
            assert path.is_file(), f"crds looks for {name} at {path}, which is missing"
            assert path.is_relative_to(cache)
            if name in view["contexts"][context]["references"]:
                parent = path.parent.relative_to(cache / "references" / observatory)
                assert (str(parent) == ".") == (layout == "flat")
