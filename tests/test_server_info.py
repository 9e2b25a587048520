"""server_config from a CRDS server's get_server_info answer, as crds writes it, and
where the answer says the files are."""

import ast

import pytest
from conftest import RULES

from crds_s3_sync.errors import FormatError
from crds_s3_sync.rules.server_config import file_urls, from_server_info, parse_server_config

VENDORED = ast.literal_eval((RULES / "config" / "jwst" / "server_config").read_text())


def test_written_as_crds_writes_it() -> None:
    answer = {k: v for k, v in VENDORED.items() if k not in ("server", "status", "connected")}
    text = from_server_info(answer, "https://jwst-crds.stsci.edu").decode()
    written = ast.literal_eval(text)
    assert written == VENDORED  # what crds itself wrote after asking the real server
    parsed = parse_server_config(text, "answer")
    assert parsed.operational_context == "jwst_0541.pmap" and len(parsed.metadata) > 5000


@pytest.mark.parametrize(
    "shape",
    [
        lambda url: {"jwst": url},
        lambda url: {"unchecked": {"jwst": url}, "checked": {"jwst": url + "x"}},
    ],
)
def test_file_urls_in_either_shape(shape) -> None:
    raw = {
        "mapping_url": shape("https://jwst-crds.stsci.edu/unchecked_get/mappings/jwst/"),
        "reference_url": shape("https://jwst-crds.stsci.edu/unchecked_get/references/jwst/"),
    }
    assert file_urls(raw, "jwst", "answer") == (
        "https://jwst-crds.stsci.edu/unchecked_get/mappings/jwst",
        "https://jwst-crds.stsci.edu/unchecked_get/references/jwst",
    )


def test_an_answer_without_urls_is_said() -> None:
    with pytest.raises(FormatError, match="answer: no mapping_url for hst"):
        file_urls(VENDORED, "hst", "answer")
