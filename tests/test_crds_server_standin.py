"""Self-test of tests/crds_server.py, with the official crds client itself.

The stand-in is only worth trusting if `crds sync`, pointed at it as at
https://jwst-crds.stsci.edu, fills a cache from it: the JSON-RPC answers parse,
the file URLs it hands out serve the bytes server_config promises, and crds then
uses the cache offline. Its faults are checked with plain HTTP.
"""

import http.client
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RULES, files_under, reference_size, run_crds
from crds_server import Serving, StandIn, build_standin

CONTEXT = "roman_0005.pmap"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    served = build_standin(RULES, "roman", reference_size)
    with Serving(served):
        yield served


def rpc(url: str, method: str, *params: object) -> dict:
    body = json.dumps({"jsonrpc": "1.0", "method": method, "params": list(params), "id": "1"})
    request = urllib.request.Request(f"{url}/json/{method}/1/", body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


SYNC = """
import json, sys
from crds import sync
sys.argv = ["crds.sync", "--contexts", sys.argv[1].split('"')[3], "--fetch-references"]
sync.SyncScript()()
print(json.dumps("done"))
"""


def test_crds_sync_fills_a_cache_from_it(standin: StandIn, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run_crds(
        SYNC,
        cache,
        "roman",
        {"context": CONTEXT},
        timeout=120,
        CRDS_SERVER_URL=standin.url,
        CRDS_MODE="remote",
    )
    synced = files_under(cache)
    assert f"mappings/roman/{CONTEXT}" in synced
    served = [path for path in synced if path.startswith("references/")]
    assert len(served) >= 3  # the context's references (crds puts Roman's in wfi/)
    for path in served:  # the bytes server_config promises
        assert (cache / path).read_bytes() == standin.files[f"references/roman/{Path(path).name}"]
    methods = {path.split("/")[2] for method, path in standin.requests if method == "POST"}
    assert "get_server_info" in methods


def test_answers_follow_the_protocol(standin: StandIn) -> None:
    info = rpc(standin.url, "get_server_info")
    assert info["error"] is None and info["id"] == "1"
    result = info["result"]
    assert result["observatory"] == "roman"
    assert result["mapping_url"]["roman"].endswith("/unchecked_get/mappings/roman/")
    assert result["download_metadata"]["crds_encoded"] == "1.0"
    refused = rpc(standin.url, "no_such_method")
    assert refused["result"] is None and "no_such_method" in refused["error"]["message"]


def test_faults(standin: StandIn) -> None:
    key = next(key for key in standin.files if key.startswith("references/"))
    host = standin.url.removeprefix("http://")

    def get(headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection(host, timeout=10)
        connection.request("GET", f"/unchecked_get/{key}", headers=headers or {})
        return connection.getresponse()

    ranged = get({"Range": "bytes=2-5"})
    assert ranged.status == 206 and ranged.read() == standin.files[key][2:6]
    standin.faults.whole = True
    assert get({"Range": "bytes=2-5"}).status == 200
    standin.faults.busy, standin.faults.retry_after = 1, "3"
    busy = get()
    assert busy.status == 503 and busy.headers["Retry-After"] == "3"
    assert get().status == 200  # one only
    standin.faults.drop = 1
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        get()
    standin.faults.redirect = True
    moved = get()
    assert moved.status == 302 and moved.headers["Location"].endswith(f"/moved/unchecked_get/{key}")
    standin.faults.redirect, standin.faults.delay = False, 0.3
    started = time.monotonic()
    assert get().read() == standin.files[key]
    assert time.monotonic() - started >= 0.3
