"""HST contexts from their pickles, read without running anything in them.

HST buckets hold no mapping files: each context is `pickles/hst/<context>.pkl`,
the crds library's `pickle.dumps` of the loaded context. `pickle.loads` would
call whatever globals a tampered pickle names (`os.system`, `eval`), so this
reader resolves globals itself: those of the crds packages become inert
stand-ins that only record their arguments and state, `re._compile` and a few
builtin containers are allowed, and every other global is refused by name.
crds is never imported. The names come out of the recorded state the way
crds's own `mapping_names()` and `reference_names()` find them; tests check
that the two agree on real contexts.
"""

import gc
import io
import json
import os
import pickle
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..errors import FormatError
from .mapping import SPECIAL_VALUES, Mapping
from .names import check_name

_LEVELS = {
    "PipelineContext": "pipeline",
    "InstrumentContext": "instrument",
    "ReferenceMapping": "reference",
}


class Recorded:
    """An object of a crds class, kept as data: its pickled state and items.

    Pickle's BUILD puts a dict state straight into `__dict__` (in C, which is
    what makes 70,000 objects quick); nothing here runs on its behalf.
    """

    __slots__ = ("__dict__", "_items")
    crds_class = "crds"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # REDUCE calls the class; there is nothing to construct

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEMS (dict subclasses)
        if not hasattr(self, "_items"):
            self._items: dict[Any, Any] = {}
        self._items[key] = value

    def append(self, value: Any) -> None:  # APPENDS (list subclasses)
        self[len(getattr(self, "_items", ()))] = value

    def extend(self, values: Any) -> None:
        for value in values:
            self.append(value)

    @property
    def kind(self) -> str:
        return self.crds_class.rpartition(".")[2]

    def field(self, name: str, where: str) -> Any:
        if name not in self.__dict__:
            raise FormatError(f"{where}: a pickled {self.kind} without {name!r}")
        return self.__dict__[name]


_STAND_INS: dict[str, type[Recorded]] = {}


def _stand_in(qualified: str) -> type[Recorded]:
    cls = _STAND_INS.get(qualified)
    if cls is None:
        name = qualified.rpartition(".")[2] or "crds"
        cls = _STAND_INS[qualified] = type(name, (Recorded,), {"crds_class": qualified})
    return cls


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Recorded:
    """copyreg._reconstructor (protocols 0 and 1), for stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, Recorded)):
        raise pickle.UnpicklingError("copyreg._reconstructor of something not from crds")
    return cls()


# Globals a context pickle may name besides crds's own; none of them runs code.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("re", "_compile"): _stand_in("re._compile"),  # rmaps keep compiled patterns
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("__builtin__", "object"): object,
}


class UnsafePickleError(FormatError):
    """The pickle names a global that could run code."""


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, where: str) -> None:
        super().__init__(io.BytesIO(data))
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if module == "crds" or module.startswith("crds."):
            return _stand_in(f"{module}.{name}")
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise UnsafePickleError(
                f"{self.where}: refused global {module}.{name}: "
                "a context pickle may only name crds classes"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not used by crds")


def read_context_pickle(
    context: str, data: bytes, where: str, seen: dict[str, Mapping] | None = None
) -> list[Mapping]:
    """Every mapping in the pickled `context`, the context itself first. A mapping
    `seen` (read from another context's pickle: most are shared) is taken from there
    with all it names, not read again: a mapping never changes under its name."""
    # 70,000 new objects would set off several full garbage collections, which
    # made the load two to three times slower; they make no cycles worth chasing.
    # Collection stays off until they are let go: on again while they lived, the
    # walk's first allocations set off one that went through all of them (0.1 s a
    # 4 MB pickle, as long as the load).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _read(context, data, where, seen or {})
    finally:
        if collecting:
            gc.enable()


def _read(context: str, data: bytes, where: str, seen: dict[str, Mapping]) -> list[Mapping]:
    try:
        root = _Unpickler(data, where).load()
    except FormatError:
        raise
    except Exception as exc:  # truncated, corrupt or odd: all the same to a sync
        detail = " ".join(str(exc).split()) or "no detail"
        raise FormatError(
            f"{where}: not a readable context pickle ({type(exc).__name__}: {detail})"
        ) from None
    if not isinstance(root, Recorded) or _level(root) is None:
        found = root.crds_class if isinstance(root, Recorded) else type(root).__name__
        raise FormatError(f"{where}: holds a {found}, not a crds context")
    mappings = list(_mappings(root, where, seen))
    if mappings[0].name != context:
        raise FormatError(f"{where}: holds context {mappings[0].name!r}, not {context!r}")
    return mappings


class TreeReader:
    """Context pickles read one after another, each mapping once: a mapping a
    context shares with one read before (most of them) is not walked again. What
    is kept of each is the tree below it, not its references (those went out with
    the first answer): a worker process that read half of HST's contexts held
    25 MB more with them."""

    def __init__(self) -> None:
        self.seen: dict[str, Mapping] = {}

    def read(self, context: str, data: bytes, where: str) -> tuple[list[str], list[Mapping]]:
        """The names of the context's mappings, and those of its mappings that are
        new to this reader."""
        names, new = [], []
        for mapping in read_context_pickle(context, data, where, self.seen):
            names.append(mapping.name)
            if mapping.name not in self.seen:
                self.seen[mapping.name] = replace(mapping, references=())
                new.append(mapping)
        return names, new


_READER = TreeReader()  # a worker process's own


def read_in_worker(context: str, data: bytes, where: str) -> str:
    """`TreeReader.read` in a worker process, its answer as JSON text: what comes back
    to the main process is data it decodes, never a pickle for it to load."""
    names, new = _READER.read(context, data, where)
    fields = [[m.name, m.level, m.instrument, m.mappings, m.references] for m in new]
    return json.dumps([names, fields])


def from_worker(answer: str) -> tuple[list[str], list[Mapping]]:
    """A worker's answer (`read_in_worker`); names shared by many rmaps kept once."""
    names, fields = json.loads(answer)
    new = [
        Mapping(name, level, instrument, tuple(children), tuple(map(sys.intern, references)))
        for name, level, instrument, children, references in fields
    ]
    return names, new


def _level(obj: Any) -> str | None:
    if isinstance(obj, Recorded) and obj.crds_class.startswith("crds."):
        return _LEVELS.get(obj.kind)
    return None


def _mappings(root: Recorded, where: str, seen: dict[str, Mapping]) -> Iterator[Mapping]:
    """Walk the loaded mapping tree (context -> instruments -> rmaps), each mapping once."""
    emitted: set[str] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        level = _level(obj)
        if level is None:
            raise FormatError(f"{where}: a mapping's place holds {_describe(obj)}")
        filename = obj.field("filename", where)
        if not isinstance(filename, str):
            raise FormatError(f"{where}: a mapping whose filename is {_describe(filename)}")
        name = check_name(os.path.basename(filename), where)
        if name in emitted:
            continue
        if name in seen:
            yield from _seen_tree(seen[name], seen, emitted)
            continue
        emitted.add(name)
        if level == "reference":
            instrument = obj.field("instrument", where)
            if not isinstance(instrument, str):
                raise FormatError(f"{where}: {name}: instrument is {_describe(instrument)}")
            references = tuple(_references(obj.field("selector", where), name, where))
            yield Mapping(name, level, instrument.lower(), (), references)
        else:
            children = _selections(obj.field("selections", where), name, where)
            yield Mapping(name, level, None, tuple(sorted(children)), ())
            stack.extend(children[child] for child in sorted(children, reverse=True))


def _seen_tree(top: Mapping, seen: dict[str, Mapping], emitted: set[str]) -> Iterator[Mapping]:
    """`top` and what it names, as read before, in the walk's order."""
    stack = [top]
    while stack:
        mapping = stack.pop()
        if mapping.name in emitted:
            continue
        emitted.add(mapping.name)
        yield mapping
        stack.extend(seen[child] for child in reversed(mapping.mappings))


def _selections(selections: Any, name: str, where: str) -> dict[str, Recorded]:
    """The loaded child mappings of a context, as crds's `normal_values()` finds them."""
    if not isinstance(selections, Recorded):
        raise FormatError(f"{where}: {name}: selections are {_describe(selections)}")
    selector = selections.field("_xx_selector", where)
    contents = selections.field("_xx_superclass", where)
    contents = contents.get("_contents") if isinstance(contents, dict) else None
    if not isinstance(selector, dict) or not isinstance(contents, dict):
        raise FormatError(f"{where}: {name}: selections are not dictionaries")
    children = {}
    for key, value in selector.items():
        if isinstance(value, str) and value in SPECIAL_VALUES:
            continue
        child = contents.get(key)
        if child is None:
            raise FormatError(f"{where}: {name}: {value!r} is not loaded in the pickle")
        children[check_name(os.path.basename(str(value)), where)] = child
    return children


def _references(selector: Any, rmap: str, where: str) -> Iterator[str]:
    """An rmap's references as crds's `Selector.reference_names()` finds them,
    minus N/A and OMIT, nested selectors followed without recursion."""
    found: set[str] = set()
    stack = [selector]
    while stack:
        current = stack.pop()
        if not isinstance(current, Recorded) or not current.kind.endswith("Selector"):
            raise FormatError(f"{where}: {rmap}: a selector is {_describe(current)}")
        selections = current.field("_selections", where)
        if not isinstance(selections, list):
            raise FormatError(f"{where}: {rmap}: selections are {_describe(selections)}")
        for selection in selections:
            choice = _choice(selection, rmap, where)
            if isinstance(choice, Recorded):
                stack.append(choice)
            elif isinstance(choice, str):
                found.add(choice)
            elif isinstance(choice, tuple | list):
                found.update(_names(choice, rmap, where))
            elif isinstance(choice, dict):
                found.update(_names(choice.values(), rmap, where))
            else:
                raise FormatError(f"{where}: {rmap}: a choice is {_describe(choice)}")
    for name in sorted(found - SPECIAL_VALUES):
        yield sys.intern(check_name(name, where))  # each rmap names most of its sibling's


def _choice(selection: Any, rmap: str, where: str) -> Any:
    """A Selection is a (key, choice) tuple subclass that keeps `choice` in its state."""
    if isinstance(selection, Recorded):
        return selection.field("choice", where)
    if isinstance(selection, tuple) and len(selection) == 2:
        return selection[1]
    raise FormatError(f"{where}: {rmap}: a selection is {_describe(selection)}")


def _names(values: Any, rmap: str, where: str) -> list[str]:
    names = list(values)
    for value in names:
        if not isinstance(value, str):
            raise FormatError(f"{where}: {rmap}: a file name is {_describe(value)}")
    return names


def _describe(value: Any) -> str:
    if isinstance(value, Recorded):
        return f"a {value.crds_class}"
    return f"a {type(value).__name__}"
