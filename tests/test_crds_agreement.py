"""The walker and the caches the CLI writes agree with the official crds client.

crds is the reference implementation of what a context needs and of where a
cache keeps each file, so these tests ask it rather than restating its rules:
about the real contexts vendored in tests/data (what the walker must find), and
about caches the CLI has just synced (whether crds, offline, finds every file
where the sync put it and reads the config files the sync wrote).

crds keeps process-wide state (loaded mappings, the cache's subdirectory mode,
the server config), so it runs in a fresh interpreter per question, offline:
its server URL contains "serverless", which crds takes as "never call the
server", and the host does not exist anyway.
"""

import ast
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import CliResult, MakeBucket, run_crds

from crds_s3_sync.rules.walker import Walk, walk

RULES = Path(__file__).parent / "data"  # laid out like a CRDS cache: mappings/, config/
CONTEXTS = {
    "roman": [f"roman_{serial:04d}.pmap" for serial in range(1, 8)],
    "jwst": [f"jwst_{serial:04d}.pmap" for serial in range(537, 542)],
}
ALL_CONTEXTS = [(obs, context) for obs, contexts in CONTEXTS.items() for context in contexts]

# One best-reference lookup per observatory, against each observatory's operational
# context (roman_0004.pmap, jwst_0541.pmap): proof that crds can not only find the
# synced files but use the cache for what it is for. The answers come from the rules.
BESTREFS: dict[str, dict[str, Any]] = {
    "roman": {
        "parameters": {
            "ROMAN.META.INSTRUMENT.NAME": "WFI",
            "ROMAN.META.INSTRUMENT.DETECTOR": "WFI01",
            "ROMAN.META.INSTRUMENT.OPTICAL_ELEMENT": "GRISM",
            "ROMAN.META.EXPOSURE.START_TIME": "2021-01-01 00:00:00",
        },
        "reftype": "flat",
        "expected": "roman_wfi_flat_0004.asdf",
    },
    "jwst": {
        "parameters": {
            "META.INSTRUMENT.NAME": "NIRSPEC",
            "META.EXPOSURE.TYPE": "NRS_IFU",
            "META.OBSERVATION.DATE": "2023-01-01",
            "META.OBSERVATION.TIME": "00:00:00",
        },
        "reftype": "ifufore",
        "expected": "jwst_nirspec_ifufore_0003.asdf",
    },
}

# Run by `sys.executable -c` with one JSON request as argv[1]; prints one JSON answer.
# Only the crds client decides anything here; the test compares its answers.
CRDS_SCRIPT = r"""
import json
import os
import sys

from crds.core import config, heavy_client, rmap

request = json.loads(sys.argv[1])
observatory = request["observatory"]
answer = {"contexts": {}}


def describe(context):
    loaded = rmap.get_cached_mapping(context)
    instruments = {}  # reference -> instruments of the rmaps naming it
    for name in loaded.mapping_names():
        if name.endswith(".rmap"):
            child = rmap.get_cached_mapping(name)
            for reference in child.reference_names():
                instruments.setdefault(reference, []).append(child.instrument)
    return {
        "mappings": loaded.mapping_names(),
        "references": loaded.reference_names(),
        "instruments": instruments,
    }


if request.get("cache"):
    info = heavy_client.get_config_info(observatory)
    answer.update(
        subdir_mode=config.get_crds_ref_subdir_mode(observatory),
        subdir_mode_file=config.get_crds_ref_subdir_file(observatory),
        server_config=config.locate_config("server_config", observatory),
        config_status=info.status,
        operational_context=info.operational_context,
        default_context=heavy_client.get_context_name(observatory),
        bad_files=list(info.bad_files_list),
    )
    request["contexts"].append(answer["default_context"])

for context in request["contexts"]:
    answer["contexts"][context] = describe(context)

if request.get("cache"):
    names = sorted(
        {
            name
            for view in answer["contexts"].values()
            for name in view["mappings"] + view["references"]
        }
    )
    answer["located"] = {name: config.locate_file(name, observatory) for name in names}
    bestrefs = request["bestrefs"]
    try:  # offline, a file missing from the cache is an error, not a download
        answer["bestrefs"] = heavy_client.getreferences(
            bestrefs["parameters"], reftypes=[bestrefs["reftype"]], observatory=observatory
        )
    except Exception as exc:
        answer["bestrefs"] = {"error": repr(exc)}
    # Where crds would put each file in an empty cache, where nothing already
    # present can steer its locator: only the file name and the mode decide.
    os.environ["CRDS_PATH"] = request["fresh"]
    answer["fresh"] = {name: config.locate_file(name, observatory) for name in names}

print(json.dumps(answer))
"""


def ask_crds(crds_path: Path, observatory: str, **request: Any) -> dict[str, Any]:
    """crds's answer about the cache at `crds_path`, read only and offline."""
    env = {"CRDS_READONLY_CACHE": "1"}  # crds may only read: nothing it reports is its own doing
    if observatory == "roman":
        # The header sha1sum of the real roman_wfi_epsf_0001.rmap does not match
        # its text ("Autogenerated via API"), so crds would refuse to load it.
        env["CRDS_IGNORE_MAPPING_CHECKSUM"] = "1"
    request = {"observatory": observatory, **request}
    return run_crds(CRDS_SCRIPT, crds_path, observatory, request, timeout=120, **env)


def real_server_config(observatory: str) -> dict[str, Any]:
    return ast.literal_eval((RULES / "config" / observatory / "server_config").read_text())


# ---------------------------------------------------------------------------------------
# 1. The walker finds exactly the files crds says a context needs.


@pytest.fixture(scope="module")
def crds_rules() -> dict[str, dict[str, Any]]:
    """crds's view of every vendored context: one subprocess per observatory."""
    views: dict[str, dict[str, Any]] = {}
    for observatory, contexts in CONTEXTS.items():
        views.update(ask_crds(RULES, observatory, contexts=contexts)["contexts"])
    return views


def walk_rules(observatory: str, contexts: list[str], fetched: list[str] | None = None) -> Walk:
    """Walk the vendored rules; `fetch` supplies the walker's input from tests/data."""

    async def fetch(name: str) -> bytes:
        if fetched is not None:
            fetched.append(name)
        return (RULES / "mappings" / observatory / name).read_bytes()

    return anyio.run(walk, contexts, fetch, 8)


@pytest.mark.parametrize(("observatory", "context"), ALL_CONTEXTS)
def test_walker_finds_what_crds_says_a_context_needs(
    crds_rules: dict[str, dict[str, Any]], observatory: str, context: str
) -> None:
    """Mappings and references must match crds's mapping_names()/reference_names():
    a name too few is a file the pipeline will miss, one too many a wasted download.
    The instrument must be that of the rmap naming the reference in crds, since it
    decides the reference's directory in an instrument cache."""
    crds_view = crds_rules[context]
    walked = walk_rules(observatory, [context])

    assert walked.contexts == [context]
    assert sorted(walked.mappings) == crds_view["mappings"]
    assert sorted(walked.references) == crds_view["references"]
    for reference, instrument in walked.references.items():
        assert instrument in crds_view["instruments"][reference], reference


def test_walking_all_jwst_contexts_at_once_gives_the_union(
    crds_rules: dict[str, dict[str, Any]],
) -> None:
    """A multi-context sync must need exactly the union of its contexts, each
    mapping fetched once; tests/data/mappings/jwst was cut to exactly the mappings
    these five contexts need, so the union is every file there."""
    fetched: list[str] = []
    walked = walk_rules("jwst", CONTEXTS["jwst"], fetched)
    views = [crds_rules[context] for context in CONTEXTS["jwst"]]

    mappings = set().union(*(view["mappings"] for view in views))
    references = set().union(*(view["references"] for view in views))
    assert set(walked.mappings) == mappings
    assert set(walked.references) == references
    assert mappings == {path.name for path in (RULES / "mappings" / "jwst").iterdir()}
    assert sorted(fetched) == sorted(mappings), "a mapping was fetched twice, or one not at all"
    assert len(references) > 1000  # the real rules: a walk that found nothing cannot pass


# ---------------------------------------------------------------------------------------
# 2. crds, offline, finds every synced file where the sync put it.


@pytest.mark.parametrize("layout", ["flat", "instrument"])
@pytest.mark.parametrize(
    ("observatory", "selection", "contexts"),
    [
        ("roman", ["--all"], CONTEXTS["roman"]),
        (
            "jwst",
            ["--context", "jwst_0540.pmap", "--context", "jwst_0541.pmap"],
            ["jwst_0540.pmap", "jwst_0541.pmap"],
        ),
    ],
    ids=["roman", "jwst"],
)
def test_crds_uses_the_synced_cache_offline(
    make_bucket: MakeBucket,
    cli: Callable[..., CliResult],
    tmp_path: Path,
    layout: str,
    observatory: str,
    selection: list[str],
    contexts: list[str],
) -> None:
    """A synced cache is only useful if crds reads it as its own: the layout from
    config/<obs>/ref_cache_subdir_mode, the default context from the cached
    server_config, and every file of every synced context at the path its
    locator computes, which in an instrument cache means
    references/<obs>/<instrument>/. crds runs read-only, so it cannot have
    created any of the files it reports."""
    bucket = make_bucket(observatory)
    cache = tmp_path / "cache"
    result = cli(
        *bucket.args(), *selection, "--cache", cache, "--layout", layout, "--quiet", "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["contexts"] == contexts
    assert report["failed"] == []

    fresh = tmp_path / "empty-cache"
    fresh.mkdir()
    view = ask_crds(
        cache,
        observatory,
        contexts=contexts,
        cache=True,
        fresh=str(fresh),
        bestrefs=BESTREFS[observatory],
    )
    config_dir = cache / "config" / observatory

    # The cache's own config files, as crds reads them.
    assert view["subdir_mode"] == layout
    assert Path(view["subdir_mode_file"]) == config_dir / "ref_cache_subdir_mode"
    assert Path(view["subdir_mode_file"]).is_file()
    assert Path(view["server_config"]) == config_dir / "server_config"
    assert view["config_status"] == "cache"
    real = real_server_config(observatory)
    assert view["operational_context"] == real["operational_context"]
    assert view["default_context"] == real["operational_context"]
    assert view["default_context"] in contexts  # and crds loaded it from the cache
    assert view["bad_files"] == real["bad_files_list"]
    assert (config_dir / "bad_files.txt").read_text() == "\n".join(view["bad_files"])

    # Every file of every synced context, where crds looks for it.
    needed: set[str] = set()
    references: set[str] = set()
    instruments: dict[str, list[str]] = {}
    for context in contexts:
        context_view = view["contexts"][context]
        needed.update(context_view["mappings"], context_view["references"])
        references.update(context_view["references"])
        instruments.update(context_view["instruments"])
    assert needed == view["located"].keys()
    for name, path in view["located"].items():
        located = Path(path)
        assert located.is_relative_to(cache), located
        assert located.is_file(), f"crds looks for {name} at {located}, which is missing"
        # Where crds itself would have put the file, had it downloaded it.
        assert located.relative_to(cache) == Path(view["fresh"][name]).relative_to(fresh)
        if name not in references:
            assert located.parent == cache / "mappings" / observatory
        elif layout == "flat":
            assert located.parent == cache / "references" / observatory
        else:
            assert located.parent.parent == cache / "references" / observatory
            assert located.parent.name in instruments[name], located

    # Nothing beyond what crds needs: no extra and no stray (temporary) files.
    on_disk = {
        path
        for kind in ("mappings", "references")
        for path in (cache / kind).rglob("*")
        if path.is_file()
    }
    assert on_disk == {Path(path) for path in view["located"].values()}

    # crds can use the cache: a best-reference lookup resolves to a synced file.
    expected = BESTREFS[observatory]["expected"]
    assert view["bestrefs"] == {BESTREFS[observatory]["reftype"]: view["located"][expected]}
