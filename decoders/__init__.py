"""Decoder registry: `register(name)`, `get(name, **params)`, `available()`, `get_class(name)`.

Every module in this package is imported on first use, so adding a strategy is one new file with one
`@register("name")` decorator and no edit elsewhere.
"""

from __future__ import annotations

from pdbench_registry import Registry

from decoders.base import DecodeResult, Decoder, DecoderConfigError, ModelAdapter

__all__ = ["register", "unregister", "get", "available", "get_class", "Decoder", "DecodeResult",
           "DecoderConfigError", "ModelAdapter"]

REGISTRY = Registry("decoder", discover_package=__name__)
register, unregister, get_class, available = REGISTRY.register, REGISTRY.unregister, REGISTRY.get_class, REGISTRY.names


def get(name: str, **params) -> Decoder:
    """Build a decoder by name; unknown or invalid parameters raise DecoderConfigError (a ValueError)."""
    return get_class(name).build(**params)
