"""Suite registry: `register(name)`, `get(name, **options)`, `available()` (same shape as decoders)."""

from __future__ import annotations

import difflib
import importlib
import pkgutil

from suites.base import CodeExecNotAllowed, Grade, Sample, Suite

__all__ = ["register", "get", "available", "get_class", "Suite", "Sample", "Grade", "CodeExecNotAllowed"]

_REGISTRY: dict[str, type[Suite]] = {}
_discovered = False


def register(name: str):
    def wrap(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def available() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_class(name: str) -> type[Suite]:
    _discover()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown suite {name!r}{hint} (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def get(name: str, **options) -> Suite:
    return get_class(name)(**options)
