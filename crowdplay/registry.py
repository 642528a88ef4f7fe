"""Registries of classes by name (policies, framebuffers, statistics), filled by decorators.

The decorators return the class unchanged, so they stack (one class under several names), and a
name already taken by another class is an error, so a typo or a second plugin cannot silently
replace a registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T", bound=type)
#: the class a decorator is applied to, handed back as its own type (a subclass stays itself for
#: the checker); the public decorators bound it to their registry's base class
C = TypeVar("C", bound=type)


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

    def register(self, name: str) -> Callable[[C], C]:
        """A decorator registering its class under ``name`` and returning it unchanged."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def register(cls: C) -> C:
            entry = cast(T, cls)  # the public decorator's signature bounds C to this registry's kind
            registered = self._classes.setdefault(name, entry)
            if registered is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered to {registered.__qualname__}")
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
