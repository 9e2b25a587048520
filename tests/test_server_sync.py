"""Syncing from a CRDS server, through the command as users run it, against the
stand-in (tests/crds_server.py): what lands in the cache, what crds then reads
offline, which requests were made, and the server's faults."""

import ast
import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RULES, command_line, files_under, interrupt_after_parts, reference_size
from connect_proxy import ConnectProxy
from crds_server import Serving, StandIn, build_standin
from datasets import JWST, write_fits
from test_crds_agreement import BESTREFS, ask_crds
from test_datasets import chosen, crds_answer, references_in
from test_network import STEERING
from tls_certificates import Certificates, make_certificates

from crds_s3_sync import __version__
from crds_s3_sync.rules.server_config import from_server_info

BIG = "roman_wfi_flat_0004.asdf"  # made big enough to be fetched in ranged parts
RANGED = ["--multipart-threshold", "1M", "--part-size", "256K"]
PARTS = ["--multipart-threshold", "1M", "--part-size", "64K"]  # 46 parts: slow to fetch one by one


def size_of(name: str) -> int:
    return 3_000_000 if name == BIG else reference_size(name)


@pytest.fixture(scope="module")
def built() -> StandIn:
    return build_standin(RULES, "roman", size_of)


@pytest.fixture
def standin(built: StandIn) -> Iterator[StandIn]:
    """The module's stand-in, served afresh: no faults, no requests yet."""
    built.faults = type(built.faults)()
    built.requests.clear()
    built.agents.clear()
    built.peak = 0
    with Serving(built):
        yield built


def clean(**env: str) -> dict[str, str]:
    """The test's environment without the machine's proxy and CA settings, plus `env`."""
    return {**{k: v for k, v in os.environ.items() if k not in STEERING}, **env}


def sync(*args: object, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """The command in a process of its own, in the test's clean environment plus `env`."""
    return command_line(clean(**env), *args, timeout=timeout)


def gets(standin: StandIn) -> Counter[str]:
    return Counter(path for method, path in standin.requests if method == "GET")


def posts(standin: StandIn) -> list[str]:
    return [path.split("/")[2] for method, path in standin.requests if method == "POST"]


def served(standin: StandIn, cache: Path) -> None:
    """Every file in the cache's mappings and references is the server's bytes."""
    for path in files_under(cache):
        if path.startswith(("mappings/", "references/")):
            key = "/".join([path.split("/")[0], "roman", Path(path).name])
            assert (cache / path).read_bytes() == standin.files[key], path


def test_a_server_fills_a_cache_crds_reads_offline(standin: StandIn, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    done = sync("--server", standin.url, "--cache", cache, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["contexts"] == ["roman_0004.pmap"]  # the server's operational context
    config = cache / "config" / "roman" / "server_config"
    info = standin.server_info()
    assert config.read_bytes() == from_server_info(info, standin.url)  # as crds writes it
    assert ast.literal_eval(config.read_text())["connected"] is True
    bad_files = (cache / "config" / "roman" / "bad_files.txt").read_text()
    assert bad_files.split() == info["bad_files_list"]
    assert (cache / "config" / "roman" / "ref_cache_subdir_mode").read_text() == "flat"
    served(standin, cache)
    assert posts(standin) == ["get_server_info"]  # one answer plans it all
    fetched = gets(standin)
    assert max(fetched.values()) == 1  # each file once: mappings planned are kept
    assert len(fetched) == result["downloaded"] - 1  # server_config came with the answer
    assert standin.agents == {f"crds-s3-sync/{__version__}"}
    crds = ask_crds(
        cache, "roman", contexts=[], cache=True, bestrefs=BESTREFS["roman"], fresh=str(tmp_path)
    )
    assert crds["config_status"] == "cache" and crds["default_context"] == "roman_0004.pmap"
    assert crds["bestrefs"] == {"flat": str(cache / "references/roman" / BIG)}
    assert all(Path(path).exists() for path in crds["located"].values())

    standin.requests.clear()
    again = sync("--server", standin.url, "--cache", cache, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["downloaded"] == 0
    assert posts(standin) == ["get_server_info"] and not gets(standin)  # no work


def test_selections_from_the_servers_list_and_dates(standin: StandIn, tmp_path: Path) -> None:
    url, cache = standin.url, tmp_path / "cache"
    last = sync("--server", url, "--cache", cache, "--last", 2, "--dry-run", "--json")
    assert json.loads(last.stdout)["contexts"] == ["roman_0004.pmap", "roman_0005.pmap"]
    every = sync("--server", url, "--cache", cache, "--all", "--dry-run", "--json")
    assert json.loads(every.stdout)["contexts"] == [f"roman_{n:04d}.pmap" for n in range(1, 6)]
    dated = sync("--server", url, "--cache", cache, "roman-2020-11-06T16:00:00", "--json")
    assert dated.returncode == 0, dated.stderr
    assert json.loads(dated.stdout)["contexts"] == ["roman_0003.pmap"]  # by the history
    assert "get_context_by_date" in posts(standin)
    crds_spelling = sync(
        "--server", url, "--cache", tmp_path / "rules", "--contexts", "roman_0005.pmap"
    )
    assert crds_spelling.returncode == 0, crds_spelling.stderr
    assert not (tmp_path / "rules" / "references").exists()  # crds sync's meaning: rules only


def test_instrument_layout_keys_and_shards_from_a_server(standin: StandIn, tmp_path: Path) -> None:
    url, cache = standin.url, tmp_path / "cache"
    key = sync("--server", url, "--cache", cache, "--layout", "instrument", "--print-key")
    assert key.returncode == 0 and key.stdout.startswith("crds-roman-instrument-")
    for shard in ("1/2", "2/2"):
        part = sync("--server", url, "--cache", cache, "--layout", "instrument", "--shard", shard)
        assert part.returncode == 0, part.stderr
    assert (cache / "references" / "roman" / "wfi" / BIG).exists()  # crds's instrument layout
    assert (cache / "config" / "roman" / "ref_cache_subdir_mode").read_text() == "instrument"
    crds = ask_crds(
        cache, "roman", contexts=[], cache=True, bestrefs=BESTREFS["roman"], fresh=str(tmp_path)
    )
    assert crds["subdir_mode"] == "instrument"
    assert crds["bestrefs"] == {"flat": str(cache / "references/roman/wfi" / BIG)}
    assert all(Path(path).exists() for path in crds["located"].values())
    again = sync("--server", url, "--cache", cache, "--print-key")  # the cache's layout kept
    assert again.stdout == key.stdout


def test_what_a_server_cannot_do_is_refused(standin: StandIn, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    pickles = sync("--server", standin.url, "--cache", cache, "--pickles")
    assert pickles.returncode == 2 and "--pickles with a CRDS server" in pickles.stderr
    both = sync("--server", standin.url, "--bucket", "b", "--cache", cache)
    assert both.returncode == 2 and "name two sources" in both.stderr
    other = sync("--server", standin.url, "--observatory", "jwst", "--cache", cache)
    assert other.returncode == 2 and "serves 'roman', not 'jwst'" in other.stderr
    s3_date = sync("--bucket", "b", "--cache", cache, "roman-2020-11-06T16:00:00")
    assert s3_date.returncode == 2 and "only a CRDS server's history resolves" in s3_date.stderr
    assert not cache.exists()
    standin.faults.rpc_error = "Internal error: <b>database</b>\n unavailable"
    failed = sync("--server", standin.url, "--cache", cache)
    assert failed.returncode == 2
    assert (
        failed.stderr.strip()
        .splitlines()[-1]
        .endswith("get_server_info: Internal error: <b>database</b> unavailable")
    )
    standin.faults.rpc_error = ""
    standin.faults.portal = True
    portal = sync("--server", standin.url, "--cache", cache)
    assert portal.returncode == 2 and "captive portal" in portal.stderr
    standin.faults.portal = False
    standin.files_url = "https://files.example.org:99999"  # no such port
    bad_url = sync("--server", standin.url, "--cache", cache)
    assert bad_url.returncode == 2
    assert "99999/unchecked_get/mappings/roman: not an http(s)" in bad_url.stderr
    standin.files_url = ""
    no_bundle = sync("--server", standin.url, "--cache", cache, SSL_CERT_FILE=str(tmp_path / "no"))
    assert no_bundle.returncode == 2 and "SSL_CERT_FILE=" in no_bundle.stderr
    nowhere = sync("--server", "http://no-such-host.invalid", "--cache", cache)
    assert nowhere.returncode == 2 and "does not resolve" in nowhere.stderr
    assert not cache.exists() or not files_under(cache)
    legacy = tmp_path / "legacy" / "config" / "roman"
    legacy.mkdir(parents=True)
    (legacy / "ref_cache_subdir_mode").write_text("legacy")  # crds's oldest layout
    refused = sync("--server", standin.url, "--cache", tmp_path / "legacy")
    assert refused.returncode == 2 and "reference layout 'legacy'" in refused.stderr


def test_a_busy_server_is_waited_for_as_it_asks(standin: StandIn, tmp_path: Path) -> None:
    standin.faults.busy, standin.faults.retry_after = 3, "2"
    done = sync("--server", standin.url, "--cache", tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["retries"] >= 3 and result["failed"] == []
    assert result["seconds"] >= 2  # Retry-After: 2, not the back-off's first 0.1 s
    served(standin, tmp_path)


def test_drops_redirects_and_a_server_that_ignores_ranges(standin: StandIn, tmp_path: Path) -> None:
    standin.faults.drop, standin.faults.redirect, standin.faults.whole = 5, True, True
    done = sync("--server", standin.url, "--cache", tmp_path, *RANGED, "--json")
    assert done.returncode == 0, done.stderr
    served(standin, tmp_path)
    assert (tmp_path / "references" / "roman" / BIG).stat().st_size == size_of(BIG)
    big = [p for p in gets(standin) if p.endswith(BIG)]
    assert any(p.startswith("/moved/") for p in big)  # redirected, then whole


@pytest.fixture(scope="module")
def jwst() -> StandIn:
    """JWST's rules: 124 mappings under jwst_0541.pmap, a hundred of them rmaps."""
    return build_standin(RULES, "jwst", reference_size)


def killed_after_parts(standin: StandIn, cache: Path, parts: int) -> None:
    """A sync of the big file a part at a time, killed once `parts` parts are done."""
    args = ["--server", standin.url, "--cache", str(cache), "--jobs", "1", "--quiet", *PARTS]
    record = cache / "references" / "roman" / f".{BIG}.part.json"
    assert interrupt_after_parts(args, record, parts, signal.SIGKILL, clean()) == -signal.SIGKILL
    assert not (cache / "references" / "roman" / BIG).exists()


def test_a_big_file_resumes_where_ranges_are_honoured_else_restarts(
    standin: StandIn, tmp_path: Path
) -> None:
    standin.faults.delay = 0.1  # slow enough to stop part of the way
    killed_after_parts(standin, tmp_path / "a", 3)
    standin.faults.delay = 0
    resumed = sync("--server", standin.url, "--cache", tmp_path / "a", *PARTS, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert 3 * (64 << 10) <= json.loads(resumed.stdout)["resumed_bytes"] < size_of(BIG)
    served(standin, tmp_path / "a")

    standin.faults.delay = 0.1
    killed_after_parts(standin, tmp_path / "b", 3)
    standin.faults.delay, standin.faults.whole = 0, True  # now the server ignores Range
    restarted = sync("--server", standin.url, "--cache", tmp_path / "b", *PARTS, "--json")
    assert restarted.returncode == 0, restarted.stderr
    assert json.loads(restarted.stdout)["resumed_bytes"] == 0
    served(standin, tmp_path / "b")
    assert not list((tmp_path / "b" / "references" / "roman").glob(".*"))  # no parts left


def test_connections_default_to_sixteen_and_jobs_wins(jwst: StandIn, tmp_path: Path) -> None:
    jwst.faults.delay = 0.02  # a far server: each answer takes a while
    with Serving(jwst):
        done = sync("--server", jwst.url, "--cache", tmp_path / "a", "--mappings-only")
        assert done.returncode == 0, done.stderr
        assert jwst.peak == 16
        jwst.peak = 0
        done = sync("--server", jwst.url, "--cache", tmp_path / "b", "--jobs", 3, "--mappings-only")
        assert done.returncode == 0, done.stderr
        assert jwst.peak == 3
    jwst.faults.delay = 0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def test_jwst_users_default_to_the_public_server_through_their_proxy(
    jwst: StandIn, certs: Certificates, tmp_path: Path
) -> None:
    """No --server: JWST has no public bucket, so https://jwst-crds.stsci.edu, reached as
    a user's shell reaches HTTPS (a CONNECT proxy, a CA bundle of their own)."""
    serving = Serving(jwst, (certs.cert, certs.key), "https://jwst-crds.stsci.edu")
    with serving, ConnectProxy(0, allow={"jwst-crds.stsci.edu": serving.port}) as proxy:
        done = sync(
            "--observatory",
            "jwst",
            "--cache",
            tmp_path,
            "--mappings-only",
            HTTPS_PROXY=proxy.url,
            SSL_CERT_FILE=str(certs.ca),
        )
        assert done.returncode == 0, done.stderr
        assert {target for target, _ in proxy.connects} == {"jwst-crds.stsci.edu:443"}
        jwst.files_url = "http://jwst-crds.stsci.edu"  # an HTTPS server's files over HTTP
        try:
            plain = sync(
                "--observatory", "jwst", "--cache", tmp_path / "plain",
                HTTPS_PROXY=proxy.url, SSL_CERT_FILE=str(certs.ca),
            )  # fmt: skip
        finally:
            jwst.files_url = ""
        assert plain.returncode == 2 and "over plain HTTP: refused" in plain.stderr
    assert (tmp_path / "mappings" / "jwst" / "jwst_0541.pmap").exists()


def test_datasets_check_and_repair_from_a_server(jwst: StandIn, tmp_path: Path) -> None:
    datasets = [
        write_fits(tmp_path / "data" / f"{mode}_uncal.fits", "JWST", keywords)
        for mode, keywords in JWST.items()
    ]
    cache = tmp_path / "cache"
    with Serving(jwst):
        done = sync("--server", jwst.url, "--datasets", *datasets, "--cache", cache)
        assert done.returncode == 0, done.stderr
        answers = crds_answer(cache, "jwst", "jwst_0541.pmap", datasets)
        assert chosen(answers) and references_in(cache, "jwst") == chosen(answers)
        victim = next((cache / "references" / "jwst").iterdir())
        victim.write_bytes(b"not the file")
        check = sync("--server", jwst.url, "--datasets", *datasets, "--cache", cache, "--check")
        assert check.returncode == 1 and victim.name in check.stdout
        repair = sync("--server", jwst.url, "--datasets", *datasets, "--cache", cache, "--repair")
        assert repair.returncode == 0, repair.stderr
    assert victim.read_bytes() == jwst.files[f"references/jwst/{victim.name}"]
