"""The JSON-RPC client against the CRDS server stand-in (tests/crds_server.py)."""

import base64
import gzip
import json
from collections.abc import Iterator

import pytest
from conftest import RULES, reference_size
from crds_server import Serving, StandIn, build_standin

from crds_s3_sync.errors import FormatError, SyncError, Transient
from crds_s3_sync.network import crds_rpc


@pytest.fixture
def standin() -> Iterator[StandIn]:
    served = build_standin(RULES, "jwst", reference_size)
    with Serving(served):
        yield served


async def test_server_info_in_one_call(standin: StandIn) -> None:
    async with crds_rpc.Client(10) as client:
        info = await crds_rpc.call(client, standin.url, "get_server_info")
    assert info["observatory"] == "jwst" and info["operational_context"].endswith(".pmap")
    assert info["download_metadata"]["crds_encoded"] == "1.0"  # kept as crds keeps it
    posts = [path for method, path in standin.requests if method == "POST"]
    assert posts == ["/json/get_server_info/" + posts[0].split("/")[3] + "/"]


async def test_an_encoded_result_is_decoded() -> None:
    """As crds's server encodes (crds.client.proxy.crds_encode)."""
    sent = {"mappings": ["jwst_0541.pmap"], "n": 1}
    payload = base64.b64encode(gzip.compress(json.dumps(sent).encode())).decode()
    assert crds_rpc.decode({"crds_encoded": "1.0", "crds_payload": payload}, "x") == sent
    assert crds_rpc.decode(sent, "x") is sent
    with pytest.raises(FormatError, match="x: an encoded result that does not decode"):
        crds_rpc.decode({"crds_encoded": "1.0", "crds_payload": "not base64!"}, "x")


async def test_the_servers_error_is_one_line(standin: StandIn) -> None:
    async with crds_rpc.Client(10) as client:
        with pytest.raises(SyncError, match=r"get_nothing: method 'get_nothing' is not served"):
            await crds_rpc.call(client, standin.url, "get_nothing")


async def test_a_captive_portal_is_no_answer(standin: StandIn) -> None:
    standin.faults.portal = True
    async with crds_rpc.Client(10) as client:
        with pytest.raises(FormatError, match=r"no JSON-RPC answer .*'<!DOCTYPE html>"):
            await crds_rpc.call(client, standin.url, "get_server_info")


async def test_nothing_listening_is_transient() -> None:
    async with crds_rpc.Client(2) as client:
        with pytest.raises(Transient, match=r"127\.0\.0\.1:9"):
            await crds_rpc.call(client, "http://127.0.0.1:9", "get_server_info")
