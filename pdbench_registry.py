"""One small name -> class registry, shared by the decoder and suite packages (it knows neither).

    DECODERS = Registry("decoder", discover_package="decoders")
    @DECODERS.register("ar")
    class AR(Decoder): ...
    DECODERS.get_class("ar"); DECODERS.names(); DECODERS.unregister("ar")   # tests clean up

Every module of `discover_package` (except `_private` and `base`) is imported on first lookup, so a
new strategy or task is one file with one decorator and no edit elsewhere. A name can be registered
by one class only; a second class under the same name is an error, not a silent overwrite.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil


class Registry:
    def __init__(self, kind: str, discover_package: str):
        self.kind = kind  # "decoder" | "suite": used in messages
        self.package = discover_package
        self._classes: dict[str, type] = {}
        self._discovered = False

    def register(self, name: str):
        def wrap(cls: type) -> type:
            owner = self._classes.get(name)
            if owner is not None and owner is not cls:
                raise ValueError(f"{self.kind} name {name!r} is already registered by {owner.__qualname__}")
            cls.name = name
            self._classes[name] = cls
            return cls

        return wrap

    def unregister(self, name: str) -> None:
        self._classes.pop(name, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # before the imports: a module registering itself must not recurse here
        try:
            package = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__):
                if not info.name.startswith("_") and info.name != "base":
                    importlib.import_module(f"{self.package}.{info.name}")
        except BaseException:
            self._discovered = False  # a module failed to import: the next lookup tries again, not a partial list
            raise

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._classes)

    def get_class(self, name: str) -> type:
        self._discover()
        if name not in self._classes:
            close = difflib.get_close_matches(name, list(self._classes), n=3, cutoff=0.4)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}{hint} (available: {', '.join(self.names())})")
        return self._classes[name]
