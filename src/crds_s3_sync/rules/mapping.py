"""Read CRDS mapping files (.pmap, .imap, .rmap) without executing them.

A mapping is Python-looking text: `header = {...}`, `selector = ...`, maybe
`comment = "..."`. CRDS itself `exec`s it; here it is parsed with `ast` and only
literals and calls to CRDS's selector names are accepted. What a sync needs
from a mapping is the names it points to (child mappings or references) and,
for an rmap, the instrument, which decides the cache subdirectory.
"""

import ast
import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import FormatError
from .names import check_name

# The selector classes crds.core.selectors.SELECTORS defines.
SELECTOR_NAMES = frozenset(
    {
        "Match",
        "UseAfter",
        "VersionAfter",
        "SelectVersion",
        "ClosestTime",
        "GeometricallyNearest",
        "Bracket",
    }
)
# Placeholders CRDS uses instead of a file name (crds.core.rmap.MappingSelectionsDict).
SPECIAL_VALUES = frozenset({"N/A", "TEMP_N/A", "n/a", "temp_n/a", "OMIT", "TEMP_OMIT", "omit"})
_ASSIGNABLE = frozenset({"header", "selector", "comment"})
_KINDS = {".pmap": "pipeline", ".imap": "instrument", ".rmap": "reference"}


@dataclass(frozen=True)
class Mapping:
    """What a walk needs from one mapping file."""

    name: str
    level: str  # pipeline, instrument or reference
    instrument: str | None  # lower case, as the cache's instrument subdirectories
    mappings: tuple[str, ...]  # child mappings, for a .pmap or .imap
    references: tuple[str, ...]  # for an .rmap


@dataclass(frozen=True)
class _Selector:
    """A call like `Match({...})`, kept as data."""

    kind: str
    choices: Any


def mapping_level(name: str) -> str | None:
    return next((kind for ext, kind in _KINDS.items() if name.endswith(ext)), None)


def is_mapping_name(name: str) -> bool:
    return mapping_level(name) is not None


def parse_mapping(name: str, text: str) -> Mapping:
    """Parse the mapping file `name`; its content is `text`."""
    level = mapping_level(name)
    if level is None:
        raise FormatError(f"{name}: not a mapping name (.pmap, .imap or .rmap)")
    values = _evaluate_module(name, text)
    header, selector = values.get("header"), values.get("selector")
    if not isinstance(header, dict):
        raise FormatError(f"{name}: 'header' must be a dict")
    if selector is None:
        raise FormatError(f"{name}: no 'selector'")
    instrument = header.get("instrument")
    instrument = instrument.lower() if isinstance(instrument, str) else None
    if level == "reference":
        refs = sorted({check_name(ref, name) for ref in _leaf_names(selector, name)})
        return Mapping(name, level, instrument, (), tuple(refs))
    if not isinstance(selector, dict):
        raise FormatError(f"{name}: the selector of a {level} mapping must be a dict")
    children = set()
    for child in selector.values():
        if not isinstance(child, str):
            raise FormatError(f"{name}: selector value {child!r:.60} is not a file name")
        if child not in SPECIAL_VALUES:
            children.add(check_name(child, name))
    for child in children:
        if not is_mapping_name(child):
            raise FormatError(f"{name}: {child!r} is not a mapping name")
    return Mapping(name, level, instrument, tuple(sorted(children)), ())


def _evaluate_module(name: str, text: str) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():  # the bucket's text must not print on our stderr
            warnings.simplefilter("ignore", SyntaxWarning)
            module = ast.parse(text, filename=name)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        line = getattr(exc, "lineno", None)
        raise FormatError(f"{name}: not valid mapping syntax (line {line})") from None
    values = {}
    for stmt in module.body:
        if (
            not isinstance(stmt, ast.Assign)
            or len(stmt.targets) != 1
            or not isinstance(stmt.targets[0], ast.Name)
            or stmt.targets[0].id not in _ASSIGNABLE
        ):
            raise FormatError(
                f"{name}: line {stmt.lineno}: only header, selector and comment may be assigned"
            )
        try:
            values[stmt.targets[0].id] = _literal(stmt.value, name)
        except RecursionError:
            raise FormatError(f"{name}: line {stmt.lineno}: nested too deeply") from None
    return values


def _literal(node: ast.expr, name: str) -> Any:
    """Like ast.literal_eval, plus calls to CRDS selectors with one dict argument."""
    if isinstance(node, ast.Constant):  # most nodes: skip literal_eval's own walk
        return node.value
    if isinstance(node, ast.Call):
        func = node.func.id if isinstance(node.func, ast.Name) else None
        if func not in SELECTOR_NAMES:
            what = func or ast.unparse(node.func)[:40]
            raise FormatError(f"{name}: line {node.lineno}: call to {what!r} is not a selector")
        if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Dict):
            raise FormatError(f"{name}: line {node.lineno}: {func} takes one dict")
        return _Selector(func, _literal(node.args[0], name))
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise FormatError(f"{name}: line {node.lineno}: '**' is not allowed")
        keys = [_literal(key, name) for key in node.keys if key is not None]
        try:
            return dict(zip(keys, [_literal(value, name) for value in node.values], strict=True))
        except TypeError:
            raise FormatError(f"{name}: line {node.lineno}: unhashable dict key") from None
    if isinstance(node, ast.Tuple | ast.List):
        items = [_literal(item, name) for item in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        raise FormatError(
            f"{name}: line {getattr(node, 'lineno', '?')}: {ast.unparse(node)[:40]!r} "
            "is not a literal"
        ) from None


def _leaf_names(selector: Any, name: str) -> list[str]:
    """Collect file names the way crds's Selector.reference_names does."""
    if isinstance(selector, _Selector):
        if not isinstance(selector.choices, dict):
            raise FormatError(f"{name}: {selector.kind} takes a dict")
        return [ref for choice in selector.choices.values() for ref in _leaf_names(choice, name)]
    if isinstance(selector, dict):
        return [ref for choice in selector.values() for ref in _leaf_names(choice, name)]
    if isinstance(selector, tuple | list):
        return [ref for choice in selector for ref in _leaf_names(choice, name)]
    if isinstance(selector, str):
        return [] if selector in SPECIAL_VALUES else [selector]
    raise FormatError(f"{name}: selector value {selector!r:.60} is not a file name")
