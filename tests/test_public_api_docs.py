"""Every public name of wan_data has a docstring: what ``help()`` shows a user is never empty.

The public API is every module of the package (its docstring), every class and function named
in a module's ``__all__`` and defined there (re-exports are checked where they are defined),
and the public methods and properties of those classes. A method counts as documented when it
or the same-named member of a base class (in the MRO) has a docstring: an override of a
documented ``process``/``identity``/``emit`` shows the base's text in ``help()``, as a reader
expects. Dataclass fields are attributes, documented in the class docstring, not checked here.

``wan_data.__main__`` is left out: importing it runs the command line.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import wan_data

# Modules that importing would run, not define.
SKIPPED_MODULES = frozenset({"wan_data.__main__"})

# What Python writes into __doc__ when a class has none.
_ENUM_DEFAULT_DOC = "An enumeration."


def public_modules() -> Iterator[ModuleType]:
    """The package and every module under it whose dotted name has no ``_``-prefixed part."""
    yield wan_data
    for info in pkgutil.walk_packages(wan_data.__path__, prefix="wan_data."):
        name = info.name
        if name in SKIPPED_MODULES or any(p.startswith("_") for p in name.split(".")[1:]):
            continue
        yield importlib.import_module(name)


def _has_text(doc: str | None) -> bool:
    return bool(doc and doc.strip())


def _class_documented(cls: type) -> bool:
    """Whether the class itself has a docstring (not one Python made up for it)."""
    doc = vars(cls).get("__doc__")
    if not _has_text(doc):
        return False
    assert doc is not None
    # dataclasses and namedtuples write their signature, ``Name(a: int, b)``, when there is none.
    generated = (dataclasses.is_dataclass(cls) or issubclass(cls, tuple)) and doc.startswith(
        f"{cls.__name__}("
    )
    return not generated and doc.strip() != _ENUM_DEFAULT_DOC


def _member_doc(raw: Any) -> str | None:
    """The docstring of a class attribute that is a method or property; ``""`` for others."""
    if isinstance(raw, (staticmethod, classmethod)):
        raw = raw.__func__
    if isinstance(raw, property) or inspect.isfunction(raw):
        return raw.__doc__
    cached = getattr(raw, "func", None)  # functools.cached_property
    if inspect.isfunction(cached) and hasattr(raw, "attrname"):
        return raw.__doc__ or cached.__doc__
    return ""


def _is_method(raw: Any) -> bool:
    return _member_doc(raw) != ""


def undocumented_members(cls: type) -> Iterator[str]:
    """The public methods and properties of ``cls`` that no class of its MRO documents.

    Members defined outside wan_data (``object``, ``Generic``, torch's ``Dataset``...) are not
    ours to document; dataclass fields are attributes (even one whose default is a function).
    """
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    for name in sorted(dir(cls)):
        if name.startswith("_") or name in fields:
            continue
        owner = next((base for base in cls.__mro__ if name in vars(base)), None)
        if owner is None or not owner.__module__.startswith("wan_data"):
            continue
        if not _is_method(vars(owner)[name]):
            continue
        if not any(
            _has_text(_member_doc(vars(base)[name])) for base in cls.__mro__ if name in vars(base)
        ):
            yield name


def missing_docstrings() -> list[str]:
    """Dotted names of every public module, class, function, method and property without a
    docstring; a member is named under the public class that shows it."""
    missing: list[str] = []
    for module in public_modules():
        name = module.__name__
        if not _has_text(module.__doc__):
            missing.append(name)
        for public in getattr(module, "__all__", ()):
            obj = getattr(module, public)
            if getattr(obj, "__module__", None) != name:
                continue  # a re-export: checked where it is defined
            if inspect.isclass(obj):
                if not _class_documented(obj):
                    missing.append(f"{name}.{public}")
                missing += [f"{name}.{public}.{m}" for m in undocumented_members(obj)]
            elif inspect.isfunction(obj) and not _has_text(obj.__doc__):
                missing.append(f"{name}.{public}")
    return missing


def test_every_public_module_class_function_and_method_has_a_docstring() -> None:
    missing = missing_docstrings()
    assert not missing, (
        f"{len(missing)} public name(s) without a docstring (say what it is and why: units, "
        "shapes, when it raises):\n  " + "\n  ".join(missing)
    )


def test_checker_uses_the_mro_and_skips_fields(monkeypatch: Any) -> None:
    # The helper classes are defined in this test module: pretend it is part of wan_data.
    for cls in (_Base, _Child, _Fields):
        monkeypatch.setattr(cls, "__module__", "wan_data._test")
    assert list(undocumented_members(_Child)) == ["bare", "size"]
    assert list(undocumented_members(_Fields)) == ["flush"]


def test_checker_sees_generated_class_docstrings() -> None:
    @dataclasses.dataclass
    class Plain:
        value: int

    assert not _class_documented(Plain)  # __doc__ is "Plain(value: int)"
    assert _class_documented(_Fields)


class _Base:
    """A base class whose ``process`` is documented."""

    def process(self) -> None:
        """Documented here: overrides inherit this text in ``help()``."""

    def bare(self) -> None:
        pass


class _Child(_Base):
    """A subclass: its override of ``process`` counts as documented, ``bare`` and ``size`` not."""

    def process(self) -> None:
        pass

    @property
    def size(self) -> int:
        return 1

    def _private(self) -> None:
        pass


@dataclasses.dataclass
class _Fields:
    """A dataclass: a field whose default is a function is an attribute, not a method."""

    log: Any = print
    count: int = 0

    def flush(self) -> None:
        pass
