"""Suite registry: `register(name)`, `get(name, **options)`, `available()`, `get_class(name)`."""

from __future__ import annotations

from pdbench_registry import Registry

from suites.base import CodeExecNotAllowed, Grade, Sample, Suite

__all__ = ["register", "unregister", "get", "available", "get_class", "Suite", "Sample", "Grade",
           "CodeExecNotAllowed"]

REGISTRY = Registry("suite", discover_package=__name__)
register, unregister, get_class, available = REGISTRY.register, REGISTRY.unregister, REGISTRY.get_class, REGISTRY.names


def get(name: str, **options) -> Suite:
    return get_class(name)(**options)
