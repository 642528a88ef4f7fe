"""Registries of classes by name (policies, framebuffers, statistics), filled by decorators.

The decorators return the class unchanged, so they stack (one class under several names), and a
name already taken by another class is an error, so a typo or a second plugin cannot silently
replace a registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class UnknownName(KeyError):
    """A name nobody registered; the message lists the registered ones."""

    kind = "name"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r} (registered: {', '.join(self.known) or 'none'})"


class Registry(Generic[T]):
    """Classes registered by name for one ``kind`` (policies, framebuffers, statistics); unknown names
    raise ``unknown`` listing the registered ones."""

    def __init__(self, kind: str, unknown: type[UnknownName] = UnknownName) -> None:
        self.kind = kind
        self.unknown = unknown
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator registering its class under ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def register(cls: T) -> T:
            if self._classes.get(name, cls) is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered to {self._classes[name].__qualname__}")
            self._classes[name] = cls
            return cls

        return register

    def check(self, name: str) -> str:
        """``name`` itself if registered; else the registry's ``unknown`` error naming the known ones."""
        if name not in self._classes:
            raise self.unknown(name, self.names())
        return name

    def get(self, name: str) -> T:
        """The class registered under ``name``; raises ``unknown`` if there is none."""
        return self._classes[self.check(name)]

    def find(self, name: str) -> T | None:
        """The class registered under ``name``, or None."""
        return self._classes.get(name)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._classes)
