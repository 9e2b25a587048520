"""Property-based tests (hypothesis) for the two gates input from a bucket passes:
the name validator and the mapping parser."""

import string
from pathlib import PurePosixPath

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crds_s3_sync.errors import SyncError, UnsafeNameError
from crds_s3_sync.rules.mapping import SELECTOR_NAMES, SPECIAL_VALUES, parse_mapping
from crds_s3_sync.rules.names import check_name

CACHE = PurePosixPath("/cache/references/roman")
NAME_CHARS = string.ascii_lowercase + string.digits + "_-"


@given(st.text(max_size=300))
def test_a_name_is_accepted_only_if_it_stays_in_its_directory(name: str) -> None:
    try:
        accepted = check_name(name, "test")
    except UnsafeNameError as exc:
        assert str(exc).startswith("test: ")
        return
    assert accepted == name
    path = CACHE / name
    assert path.parent == CACHE and path.name == name  # one plain component
    assert ".." not in name and "/" not in name and "\\" not in name
    assert not name.startswith(".")
    assert all(ch >= " " and ch != "\x7f" for ch in name)
    assert len(name.encode("utf-8", "surrogatepass")) <= 255


@given(st.text(alphabet=NAME_CHARS, min_size=1, max_size=60), st.sampled_from([".fits", ".asdf"]))
def test_plain_crds_names_are_accepted(stem: str, extension: str) -> None:
    assert check_name(stem + extension, "test") == stem + extension


@given(st.text(max_size=2000))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    for name in ("x.pmap", "x.imap", "x.rmap"):
        try:
            parse_mapping(name, text)
        except SyncError as exc:
            assert str(exc).startswith(name) and "\n" not in str(exc)


# Random rmaps built the way CRDS writes them: nested selector calls whose leaves
# are file names, tuples of them, or N/A-like placeholders.
file_names = st.builds(
    lambda stem, ext: f"roman_{stem}{ext}",
    st.text(alphabet=NAME_CHARS, min_size=1, max_size=20),
    st.sampled_from([".asdf", ".fits"]),
)
leaves = st.one_of(
    file_names,
    st.tuples(file_names, file_names),
    st.sampled_from(sorted(SPECIAL_VALUES)),
)
keys = st.one_of(
    st.text(alphabet=string.ascii_uppercase + "*|", min_size=1, max_size=8),
    st.tuples(st.text(alphabet=string.ascii_uppercase, min_size=1, max_size=6), st.just("*")),
)


def selector_calls(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(
        lambda kind, items: (kind, items),
        st.sampled_from(sorted(SELECTOR_NAMES)),
        st.dictionaries(keys, children, min_size=1, max_size=4),
    )


selectors = st.recursive(leaves, selector_calls, max_leaves=20)


def render(node: object) -> str:
    if isinstance(node, tuple) and len(node) == 2 and node[0] in SELECTOR_NAMES:
        kind, items = node
        body = ", ".join(f"{key!r}: {render(value)}" for key, value in items.items())
        return f"{kind}({{{body}}})"
    return repr(node)


def leaf_names(node: object) -> set[str]:
    if isinstance(node, tuple) and len(node) == 2 and node[0] in SELECTOR_NAMES:
        return set().union(*(leaf_names(value) for value in node[1].values()))
    if isinstance(node, tuple):
        return set(node)
    return {node}


@given(selector_calls(selectors))
@settings(max_examples=200)
def test_an_rmap_yields_exactly_its_leaves_minus_placeholders(selector: object) -> None:
    header = {"instrument": "WFI", "observatory": "ROMAN", "parkey": (("A",),)}
    text = f"header = {header!r}\n\nselector = {render(selector)}\n"
    mapping = parse_mapping("roman_wfi_x_0001.rmap", text)
    assert set(mapping.references) == leaf_names(selector) - SPECIAL_VALUES
    assert mapping.instrument == "wfi"
