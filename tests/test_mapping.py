"""The mapping parser: every real mapping parses; anything but literals and selectors is refused."""

import pytest
from conftest import RULES

from crds_s3_sync.errors import FormatError, UnsafeNameError
from crds_s3_sync.rules.mapping import parse_mapping
from crds_s3_sync.rules.names import check_name

VENDORED = sorted((RULES / "mappings").glob("*/*.?map"))


@pytest.mark.parametrize("path", VENDORED, ids=lambda p: p.name)
def test_every_vendored_mapping_parses(path) -> None:
    mapping = parse_mapping(path.name, path.read_text())
    assert mapping.name == path.name
    assert mapping.level == {"p": "pipeline", "i": "instrument", "r": "reference"}[path.suffix[1]]
    if mapping.level == "reference":
        assert mapping.instrument and mapping.instrument == mapping.instrument.lower()
        assert not mapping.mappings
    else:
        assert not mapping.references


RMAP = """
header = {'instrument': 'NIRCAM', 'mapping': 'REFERENCE', 'name': 'other_name.rmap'}
selector = Match({
    ('A',) : UseAfter({'2020-01-01 00:00:00' : 'one.fits', '2021-01-01 00:00:00' : 'N/A'}),
    ('B', -1.5) : ('two.fits', 'three.fits'),
    ('C',) : 'OMIT',
    ('D',) : SelectVersion({'<3.0' : 'TEMP_N/A', 'default' : 'four.asdf'}),
    ('E',) : 'one.fits',
})
"""


def test_references_are_the_leaves_minus_placeholders() -> None:
    mapping = parse_mapping("x_nircam_flat_0001.rmap", RMAP)
    assert mapping.references == ("four.asdf", "one.fits", "three.fits", "two.fits")
    assert mapping.instrument == "nircam"
    assert mapping.name == "x_nircam_flat_0001.rmap"  # the file's name, not the header's


def test_instrument_mapping_skips_placeholders() -> None:
    text = "header = {'instrument': 'WFI'}\nselector = {'DARK': 'a.rmap', 'FLAT': 'N/A'}\n"
    assert parse_mapping("x.imap", text).mappings == ("a.rmap",)


REFUSED = {
    "syntax": "header = {",
    "eval": "header = {}\nselector = eval('1')",
    "import": "header = {}\nselector = __import__('os').system('true')",
    "attribute call": "header = {}\nselector = os.system('true')",
    "keyword": "header = {}\nselector = Match(choices={})",
    "two args": "header = {}\nselector = Match({}, {})",
    "star-star": "header = {}\nselector = Match({**x})",
    "name": "header = {}\nselector = Match({'a': some_name})",
    "other assignment": "header = {}\nselector = Match({})\nimport os",
    "augmented": "header = {}\nselector = Match({})\nheader += 1",
    "expression": "header = {}\nselector = Match({})\nprint(1)",
    "list key": "header = {}\nselector = Match({[1]: 'a.fits'})",
    "number leaf": "header = {}\nselector = Match({'a': 1})",
    "header not dict": "header = 1\nselector = Match({})",
    "no selector": "header = {}",
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused(case: str) -> None:
    with pytest.raises(FormatError, match=r"bad_0001\.rmap"):
        parse_mapping("bad_0001.rmap", REFUSED[case])


def test_pipeline_selector_must_be_a_dict_of_names() -> None:
    with pytest.raises(FormatError, match="must be a dict"):
        parse_mapping("a.pmap", "header = {}\nselector = Match({})")
    with pytest.raises(FormatError, match="not a file name"):
        parse_mapping("a.pmap", "header = {}\nselector = {'X': 1}")
    with pytest.raises(FormatError, match="not a mapping name"):
        parse_mapping("a.pmap", "header = {}\nselector = {'X': 'a.fits'}")


@pytest.mark.parametrize("bad", ["../x.fits", "/abs.fits", "a\nb.fits", "a\\b.fits"])
def test_unsafe_reference_names(bad: str) -> None:
    text = f"header = {{}}\nselector = Match({{'a': {bad!r}}})"
    with pytest.raises(UnsafeNameError, match=r"x\.rmap"):
        parse_mapping("x.rmap", text)


GOOD_NAMES = [
    "jwst_nircam_flat_0001.fits",
    "roman_wfi_dark_0001.asdf",
    "16r12191j_mdz.fits",
    "hst_0729.pmap",
    "jwst_system_calver_0001.json",
]
BAD_NAMES = [
    "",
    ".",
    "..",
    "../a",
    "a/b",
    "/a",
    "a\\b",
    ".hidden",
    "a..b",
    "a\x00b",
    "a\nb",
    "a\x1bb",
    "a\x7fb",
    "a" * 256,
    None,
    1,
    b"x",
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_plain_names_pass(name: str) -> None:
    assert check_name(name, "here") == name


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_other_names_are_refused_saying_where(name: object) -> None:
    with pytest.raises(UnsafeNameError, match=r"^somewhere: "):
        check_name(name, "somewhere")
