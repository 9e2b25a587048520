"""HST: contexts walked from pickles the real crds package made, safely.

The pickles are made here by crds itself (`pickle.dumps` of a loaded, fully
loaded context, as STScI makes the ones in HST's buckets) from the real HST
rules vendored in tests/data, and the names our reader takes out of them are
compared with crds's own `mapping_names()` and `reference_names()`. Synced
caches are then loaded by crds, offline, from those pickles alone.

Two small contexts are made from hst_0729's own imaps so that a full sync
through moto stays quick: hst_0730 (COS and NICMOS, an instrument since
retired) and hst_0731 (COS, with WFPC2 set to N/A).
"""

import dataclasses
import itertools
import json
import os
import pickle
import pprint
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import (
    CREDENTIALS,
    RULES,
    Bucket,
    CliResult,
    files_under,
    final_lines,
    reference_size,
    run_crds,
)
from faults import FaultProxy

from crds_s3_sync.cache.mapping_index import NAME
from crds_s3_sync.demo import build_bucket, encode_metadata
from crds_s3_sync.rules import walker
from crds_s3_sync.rules.pickles import TreeReader, read_context_pickle
from crds_s3_sync.rules.server_config import decode_download_metadata, parse_server_config
from crds_s3_sync.run import reads

REAL = ["hst_0727.pmap", "hst_0728.pmap", "hst_0729.pmap"]
SMALL = {
    "hst_0730.pmap": {"COS": "hst_cos_0306.imap", "NICMOS": "hst_nicmos_0250.imap"},
    "hst_0731.pmap": {"COS": "hst_cos_0306.imap", "WFPC2": "N/A"},
}

LOCAL_CLIENT = {
    "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
    "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
}
SERIALS = itertools.count(900)  # contexts the tampering tests add

# Run by `sys.executable -c`: argv[1] is a JSON request, the answer one JSON line.
MAKE_PICKLES = r"""
import json, pickle, sys
from crds.core import rmap

request = json.loads(sys.argv[1])
answer = {}
for context in request["contexts"]:
    loaded = rmap.get_cached_mapping(context)
    loaded.force_load()  # every submapping in the pickle, as STScI's pickles are
    with open(f"{request['out']}/{context}.pkl", "wb") as out:
        out.write(pickle.dumps(loaded))
    instruments = {}
    for name in loaded.mapping_names():
        if name.endswith(".rmap"):
            child = rmap.get_cached_mapping(name)
            for reference in child.reference_names():
                instruments.setdefault(reference, []).append(child.instrument)
    answer[context] = {
        "mappings": loaded.mapping_names(),
        "references": loaded.reference_names(),
        "instruments": instruments,
    }
print(json.dumps(answer))
"""

# With CRDS_USE_PICKLED_CONTEXTS=1 and a cache holding no mapping files: crds can
# only load the contexts from the synced pickles.
LOAD_SYNCED = r"""
import json, sys
from crds.core import config, heavy_client

request = json.loads(sys.argv[1])
answer = {"default": heavy_client.get_context_name("hst"), "contexts": {}}
for context in request["contexts"]:
    loaded = heavy_client.get_pickled_mapping(context)
    answer["contexts"][context] = {
        "mappings": loaded.mapping_names(),
        "located": {r: config.locate_file(r, "hst") for r in loaded.reference_names()},
    }
print(json.dumps(answer))
"""


def ask_crds(script: str, crds_path: Path, **request: Any) -> dict[str, Any]:
    env = request.pop("env", {})
    # The two small contexts are made here: their header sha1sums are not theirs.
    env["CRDS_IGNORE_MAPPING_CHECKSUM"] = "1"
    return run_crds(script, crds_path, "hst", request, timeout=300, **env)


@pytest.fixture(scope="module")
def crds_made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """{context: crds's names, instruments and the pickle crds made}, for every context."""
    root = tmp_path_factory.mktemp("crds-made")
    shutil.copytree(RULES / "mappings" / "hst", root / "mappings" / "hst")
    shutil.copytree(RULES / "config" / "hst", root / "config" / "hst")
    header = (RULES / "mappings/hst/hst_0729.pmap").read_text().split("selector")[0]
    for context, selector in SMALL.items():
        text = header.replace("hst_0729.pmap", context) + f"selector = {selector!r}\n"
        (root / "mappings" / "hst" / context).write_text(text)
    out = root / "pickles"
    out.mkdir()
    answer = ask_crds(MAKE_PICKLES, root, contexts=REAL + list(SMALL), out=str(out))
    for context, view in answer.items():
        view["pickle"] = (out / f"{context}.pkl").read_bytes()
    return answer


def names_from(context: str, data: bytes) -> dict[str, Any]:
    mappings = read_context_pickle(context, data, f"{context}.pkl")
    instruments: dict[str, set[str]] = {}
    for mapping in mappings:
        for reference in mapping.references:
            instruments.setdefault(reference, set()).add(mapping.instrument or "")
    return {
        "mappings": sorted(m.name for m in mappings),
        "references": sorted(instruments),
        "instruments": instruments,
    }


@pytest.mark.parametrize("context", REAL + list(SMALL))
def test_names_from_a_pickle_are_crds_own(crds_made: dict, context: str) -> None:
    crds_view = crds_made[context]
    ours = names_from(context, crds_view["pickle"])
    assert ours["mappings"] == crds_view["mappings"]
    assert ours["references"] == crds_view["references"]
    assert ours["instruments"] == {
        name: set(found) for name, found in crds_view["instruments"].items()
    }


def test_contexts_read_one_after_another_share_mappings_and_stay_crds_own(
    crds_made: dict,
) -> None:
    """One reader takes each mapping a context shares with one read before from what it
    read then (`TreeReader`), in either order: every context's names are still crds's."""
    for order in (REAL + list(SMALL), list(SMALL) + REAL[::-1]):
        reader = TreeReader()
        answered: dict[str, tuple[str, ...]] = {}  # what came back, as the walk keeps it
        for context in order:
            names, new = reader.read(context, crds_made[context]["pickle"], context)
            assert sorted(names) == crds_made[context]["mappings"]
            answered.update((m.name, m.references) for m in new)
            references = {r for name in names for r in answered[name]}
            assert sorted(references) == crds_made[context]["references"]
            assert {m.name for m in new} <= set(names)
        assert len(reader.seen) == len({m for c in order for m in crds_made[c]["mappings"]})


def test_the_real_contexts_include_retired_instruments(crds_made: dict) -> None:
    instruments = set().union(
        *names_from("hst_0729.pmap", crds_made["hst_0729.pmap"]["pickle"])["instruments"].values()
    )
    assert {"nicmos", "wfpc2"} <= instruments
    assert len(crds_made["hst_0729.pmap"]["references"]) > 20_000


@pytest.fixture(scope="module")
def buckets(endpoint: str, crds_made: dict) -> dict[str, Bucket]:
    """Built once (each costs seconds on moto): "clean" holds the two small
    contexts and their references; "tampered" only server_config, for tests to
    add context pickles to, as someone with write access to a bucket could."""
    client = boto3.client("s3", endpoint_url=endpoint, **LOCAL_CLIENT)
    made = {}
    for kind, pickles in (("clean", {c: crds_made[c]["pickle"] for c in SMALL}), ("tampered", {})):
        name = f"hst-{kind}-{os.getpid()}"
        client.create_bucket(Bucket=name)
        references = build_bucket(
            client,
            name,
            "crds",
            RULES,
            "hst",
            reference_size,
            pickles=pickles,
            operational="hst_0730.pmap",
        )
        made[kind] = Bucket(name, "crds", "hst", endpoint, references)
    return made


def tamper(s3, buckets: dict[str, Bucket], data: bytes) -> tuple[Bucket, str]:
    """Put `data` in the tampered bucket as a new context's pickle; return the context."""
    context = f"hst_{next(SERIALS):04d}.pmap"
    bucket = buckets["tampered"]
    s3.put_object(Bucket=bucket.name, Key=f"crds/pickles/hst/{context}.pkl", Body=data)
    return bucket, context


@pytest.mark.parametrize("layout", ["flat", "instrument"])
def test_a_cache_synced_from_pickles_loads_in_crds_offline(
    buckets, cli: Callable[..., CliResult], crds_made: dict, tmp_path: Path, layout: str
) -> None:
    bucket = buckets["clean"]
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), "--all", "--cache", cache, "--layout", layout, "-q", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["contexts"] == list(SMALL)
    assert report["failed"] == [] and report["unverified"] == []
    for context in SMALL:
        synced = cache / "pickles" / "hst" / f"{context}.pkl"
        assert synced.read_bytes() == crds_made[context]["pickle"]
    assert not (cache / "mappings").exists()  # HST buckets have none to sync

    view = ask_crds(
        LOAD_SYNCED,
        cache,
        contexts=list(SMALL),
        env={"CRDS_USE_PICKLED_CONTEXTS": "1", "CRDS_READONLY_CACHE": "1"},
    )
    assert view["default"] == "hst_0730.pmap"
    located: set[Path] = set()
    for context in SMALL:
        assert view["contexts"][context]["mappings"] == crds_made[context]["mappings"]
        references = view["contexts"][context]["located"]
        assert sorted(references) == crds_made[context]["references"]
        for name, path in references.items():
            where = Path(path)
            assert where.is_file(), f"crds looks for {name} at {where}, which is missing"
            assert where.read_bytes() == bucket.references[name]
            if layout == "flat":
                assert where.parent == cache / "references" / "hst"
            else:
                assert where.parent.name in crds_made[context]["instruments"][name]
            located.add(where)
    assert {p for p in (cache / "references").rglob("*") if p.is_file()} == located


def test_each_pickle_is_fetched_once(buckets, cli: Callable[..., CliResult], tmp_path) -> None:
    """The bytes planning read are what the cache gets: a context pickle is not fetched
    a second time (HST's are 3 MB each, 1.5 GB for every context)."""
    clean = buckets["clean"]
    with FaultProxy(clean.endpoint, lambda key, count: None) as proxy:
        bucket = dataclasses.replace(clean, endpoint=proxy.url)
        result = cli(*bucket.args(), "--all", "--cache", tmp_path / "cache", "-q", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["downloaded"] == report["files"] and report["failed"] == []
    pickles = {key: n for key, n in proxy.gets.items() if key.endswith(".pkl")}
    assert pickles == {f"crds/pickles/hst/{context}.pkl": 1 for context in SMALL}
    assert sum(proxy.gets.values()) == report["files"]  # every other file once too


def test_a_plan_that_fails_half_way_leaves_no_pickle_behind(
    endpoint: str, s3, cli: Callable[..., CliResult], crds_made: dict, tmp_path: Path
) -> None:
    """The pickles read before the walk meets a broken one are only under temporary
    names, which go with the failed run: the cache is left as it was."""
    name, broken = f"hst-half-{os.getpid()}", "hst_0799.pmap"
    s3.create_bucket(Bucket=name)
    pickles = {context: crds_made[context]["pickle"] for context in SMALL}
    references = build_bucket(s3, name, "crds", RULES, "hst", reference_size, pickles=pickles)
    truncated = crds_made["hst_0731.pmap"]["pickle"][:-100]
    s3.put_object(Bucket=name, Key=f"crds/pickles/hst/{broken}.pkl", Body=truncated)

    def late(key: str, count: int) -> str | None:  # read after the good ones
        return "stall" if key.endswith(f"{broken}.pkl") else None

    cache = tmp_path / "cache"
    with FaultProxy(endpoint, late) as proxy:
        bucket = Bucket(name, "crds", "hst", proxy.url, references)
        result = cli(*bucket.args(), "--all", "--cache", cache)
    assert result.exit_code == 2, result.stderr
    assert f"{broken}.pkl: not a readable context pickle" in final_lines(result.stderr)[0]
    assert proxy.injected["stall"] == 1
    assert all(proxy.gets[f"crds/pickles/hst/{context}.pkl"] == 1 for context in SMALL)
    assert not cache.exists() or files_under(cache) == set()


@pytest.mark.parametrize(
    ("selection", "contexts"),
    [
        (["--last", "1"], ["hst_0731.pmap"]),
        (["--all"], ["hst_0730.pmap", "hst_0731.pmap"]),
        (["--context", "hst_0731.pmap"], ["hst_0731.pmap"]),
        ([], ["hst_0730.pmap"]),  # the operational context
    ],
)
def test_contexts_are_chosen_from_the_pickles_in_the_bucket(
    buckets, cli, crds_made: dict, tmp_path: Path, selection: list[str], contexts: list[str]
) -> None:
    bucket = buckets["clean"]
    result = cli(*bucket.args(), *selection, "--cache", tmp_path, "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["contexts"] == contexts
    planned = {entry["name"] for entry in report["plan"] if entry["kind"] == "reference"}
    assert planned == {r for c in contexts for r in crds_made[c]["references"]}
    pickles = [entry["name"] for entry in report["plan"] if entry["kind"] == "pickle"]
    assert pickles == [f"{context}.pkl" for context in contexts]


def test_reading_the_pickles_says_how_far_it_is(
    buckets, cli, crds_made: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A note after each pickle here (every PROGRESS_EVERY seconds in use), counting
    contexts and the references found so far, as crds lists them."""
    monkeypatch.setattr(walker, "PROGRESS_EVERY", 0.0)
    bucket = buckets["clean"]
    result = cli(*bucket.args(), "--all", "--cache", tmp_path, "--dry-run")
    assert result.exit_code == 0, result.stderr
    said = re.search(r"read 1 of 2 context pickles: ([\d,]+) references so far", result.stderr)
    assert said, result.stderr
    either = {len(crds_made[context]["references"]) for context in SMALL}  # read at once
    assert int(said.group(1).replace(",", "")) in either


def test_a_rerun_reads_no_pickle_an_earlier_run_read(
    endpoint: str, s3, cli, crds_made: dict, tmp_path: Path
) -> None:
    """The tree read from a context's pickle is kept (mapping_index) and trusted while
    server_config gives the context the same SHA-1; --verify, or a new SHA-1, reads the
    pickle again. Shown by breaking the bucket's pickle after the first run."""
    name, context = f"hst-index-{os.getpid()}", "hst_0730.pmap"
    s3.create_bucket(Bucket=name)
    pickles = {context: crds_made[context]["pickle"]}
    references = build_bucket(s3, name, "crds", RULES, "hst", reference_size, pickles=pickles)
    bucket = Bucket(name, "crds", "hst", endpoint, references)
    config_key = "crds/config/hst/server_config"
    config = parse_server_config(
        s3.get_object(Bucket=name, Key=config_key)["Body"].read().decode(), "t"
    ).raw
    metadata = {
        k: (m.size, m.sha1)
        for k, m in decode_download_metadata(config["download_metadata"], "t").items()
    }

    def give_context(sha1: str) -> None:  # as the real server_configs list every context
        metadata[context] = (1000, sha1)
        config["download_metadata"] = encode_metadata(metadata)
        s3.put_object(Bucket=name, Key=config_key, Body=pprint.pformat(config).encode())

    give_context("1" * 40)
    cache = tmp_path / "cache"
    args = [*bucket.args(), "--context", context, "--cache", cache, "--json", "-q"]
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    tree = json.loads((cache / "config/hst" / NAME).read_text())["mappings"][f"{context}.pkl"]
    assert sorted(tree["tree"].split("\n")) == sorted(crds_made[context]["mappings"])
    s3.put_object(Bucket=name, Key=f"crds/pickles/hst/{context}.pkl", Body=b"not a pickle")
    # A bucket update elsewhere: a new server_config (so no plan of the last run holds,
    # `last_plan`), the same SHA-1 for the context
    metadata["hst_unrelated_0001.fits"] = (1, "0" * 40)
    give_context("1" * 40)

    again = cli(*args)
    assert again.exit_code == 0, again.stderr
    report, before = json.loads(again.stdout), json.loads(first.stdout)
    assert (report["key"], report["files"]) == (before["key"], before["files"])
    assert report["downloaded"] == 1 and report["skipped"] == before["files"] - 1  # config
    for extra, change in (("--verify", None), (None, "2" * 40)):
        if change:
            give_context(change)
        result = cli(*args, *([extra] if extra else []))
        assert result.exit_code == 2
        assert f"{context}.pkl: not a readable context pickle" in final_lines(result.stderr)[0]


def test_pickles_can_be_asked_for_where_mappings_exist(make_bucket, cli, tmp_path: Path) -> None:
    bucket = make_bucket("roman")  # mappings, no pickles
    env = {"CRDS_USE_PICKLED_CONTEXTS": "1"}
    result = cli(*bucket.args(), "--cache", tmp_path / "cache", env=env)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("roman_0004.pmap.pkl: no such context pickle")
    assert len(final_lines(result.stderr)) == 1
    assert files_under(tmp_path) == set()


# -- pickles that are not what crds makes ------------------------------------------------


class Runs:
    """Pickles as `func(*args)`: what a tampered context would hold to run code."""

    def __init__(self, func: Callable, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def hostile_pickles(marker: Path) -> dict[str, bytes]:
    command = f"touch {marker}"
    return {
        "os.system": pickle.dumps(Runs(os.system, command)),
        "subprocess.Popen": pickle.dumps(Runs(subprocess.Popen, ["touch", str(marker)])),
        "builtins.eval": pickle.dumps(Runs(eval, f"__import__('os').system({command!r})")),
        "builtins.exec": pickle.dumps(Runs(exec, f"import os; os.system({command!r})")),
        # Deep inside an otherwise plain structure, as it would be in a real context.
        "nested": pickle.dumps(
            {"header": {"name": "hst_0730.pmap"}, "x": [Runs(os.system, command)]}
        ),
    }


@pytest.mark.parametrize(
    "case", ["os.system", "subprocess.Popen", "builtins.eval", "builtins.exec", "nested"]
)
def test_a_pickle_that_would_run_code_runs_nothing(
    buckets, s3, cli, tmp_path: Path, case: str
) -> None:
    marker = tmp_path / "ran"
    bucket, context = tamper(s3, buckets, hostile_pickles(marker)[case])
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), "--context", context, "--cache", cache)
    assert result.exit_code == 2
    lines = final_lines(result.stderr)
    assert len(lines) == 1
    assert f"{context}.pkl: refused global" in lines[0]
    assert not marker.exists()
    assert not cache.exists() or files_under(cache) == set()


def test_pickles_read_in_worker_processes_give_the_same_names_and_run_nothing(
    buckets, s3, cli, crds_made: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many pickles are read by a pool of processes (here from the first): the plan is
    crds's own, and a hostile pickle there is still refused in one line."""
    monkeypatch.setattr(reads, "POOL_FROM", 1)
    bucket = buckets["clean"]
    result = cli(*bucket.args(), "--all", "--cache", tmp_path / "a", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    planned = {e["name"] for e in json.loads(result.stdout)["plan"] if e["kind"] == "reference"}
    assert planned == {r for c in SMALL for r in crds_made[c]["references"]}
    marker = tmp_path / "ran"
    bucket, context = tamper(s3, buckets, hostile_pickles(marker)["os.system"])
    result = cli(*bucket.args(), "--context", context, "--cache", tmp_path / "b")
    assert result.exit_code == 2
    lines = final_lines(result.stderr)
    assert len(lines) == 1 and f"{context}.pkl: refused global" in lines[0]
    assert not marker.exists()


def broken_pickles(real: bytes, reference: str) -> dict[str, tuple[bytes, str]]:
    """Each: (pickle, what the error must say)."""
    escaping = ("../" * 100)[: len(reference) - 4] + "evil"
    with_newline = reference[:-5] + "\n" + reference[-4:]
    return {
        "truncated": (real[: len(real) // 2], "not a readable context pickle"),
        "empty": (b"", "not a readable context pickle"),
        "a dict": (pickle.dumps({"filename": "hst_0730.pmap"}), "holds a dict, not a crds context"),
        # A PipelineContext with no selections, written opcode by opcode.
        "no selections": (
            b"\x80\x04ccrds.core.rmap\nPipelineContext\n)\x81}(Vfilename\nVhst_0730.pmap\nub.",
            "a pickled PipelineContext without 'selections'",
        ),
        "escaping name": (
            real.replace(reference.encode(), escaping.encode()),
            "contains a path separator",
        ),
        "newline in name": (
            real.replace(reference.encode(), with_newline.encode()),
            "contains a control character",
        ),
    }


@pytest.mark.parametrize(
    "case", ["truncated", "empty", "a dict", "no selections", "escaping name", "newline in name"]
)
def test_a_malformed_pickle_is_one_line_and_writes_nothing(
    buckets, s3, cli, crds_made: dict, tmp_path: Path, case: str
) -> None:
    real = crds_made["hst_0730.pmap"]["pickle"]
    data, message = broken_pickles(real, crds_made["hst_0730.pmap"]["references"][0])[case]
    assert data != real
    bucket, context = tamper(s3, buckets, data)
    cache = tmp_path / "cache"
    result = cli(*bucket.args(), "--context", context, "--cache", cache)
    assert result.exit_code == 2, result.stderr
    lines = final_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0], lines
    assert f"{context}.pkl" in lines[0]
    assert not cache.exists() or files_under(cache) == set()
