"""Decoder registry: `register(name)`, `get(name, **params)`, `available()`.

Every module in this package is imported on first use, so adding a strategy is one new file with one
`@register("name")` decorator and no edit elsewhere.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import fields

from decoders.base import DecodeResult, Decoder, DecoderConfigError, ModelAdapter

__all__ = ["register", "get", "available", "get_class", "Decoder", "DecodeResult", "DecoderConfigError", "ModelAdapter"]

_REGISTRY: dict[str, type[Decoder]] = {}
_discovered = False


def register(name: str):
    def wrap(cls: type[Decoder]) -> type[Decoder]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"decoder name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
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


def get_class(name: str) -> type[Decoder]:
    _discover()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown decoder {name!r}{hint} (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def get(name: str, **params) -> Decoder:
    """Build a decoder by name; unknown or invalid parameters raise DecoderConfigError (a ValueError)."""
    cls = get_class(name)
    allowed = {f.name: f for f in fields(cls)}
    for key in params:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DecoderConfigError(
                f"decoder {name!r} has no parameter {key!r}{hint}; its parameters are: {', '.join(allowed)}"
            )
    return cls(**params)
