"""The one registry convention: names (and their other spellings) mapped to the classes or
functions a scenario, a profile or the CLI can name.

Attacks, energy-latency searches, defences, cost models, objectives, report formats and checks
each keep one :class:`Registry`.  A name is looked up case-insensitively with surrounding spaces
ignored; an alias resolves to its canonical name; an unknown name is one :class:`AuditorError`
listing the known ones::

    ATTACKS = Registry("attack")

    @ATTACKS.register("pgd", aliases=("pgd_linf",))
    class PGD(...): ...

    ATTACKS.get("PGD")        # -> PGD
    ATTACKS.canonical("pgd_linf")   # -> "pgd"
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import AuditorError, short

T = TypeVar("T")


def _key(name: str) -> str:
    return name.strip().lower()


class Registry(Generic[T]):
    """Canonical names in registration order, each with its object and its aliases."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    # -- filling ---------------------------------------------------------------------------
    def add(self, name: str, obj: T, aliases: tuple[str, ...] | list[str] = ()) -> T:
        """Register ``obj`` under ``name`` (and ``aliases``); a name taken twice is a bug."""
        key = _key(name)
        if key in self._entries or key in self._aliases:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[key] = obj
        for alias in aliases:
            a = _key(alias)
            if a in self._entries or a in self._aliases:
                raise ValueError(f"{self.kind} alias {alias!r} registered twice")
            self._aliases[a] = key
        return obj

    def register(self, name: str, aliases: tuple[str, ...] | list[str] = ()) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        def deco(obj: T) -> T:
            return self.add(name, obj, aliases)
        return deco

    # -- lookup ----------------------------------------------------------------------------
    def canonical(self, name) -> str:
        """The canonical name ``name`` stands for (AuditorError when it names nothing)."""
        if not isinstance(name, str):
            raise AuditorError(f"{self.kind} name must be a string, got {short(name)}")
        key = _key(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise AuditorError(f"unknown {self.kind} {short(name)}; known: {', '.join(self._entries)}")
        return key

    def get(self, name) -> T:
        """The object registered as ``name`` (or one of its aliases)."""
        return self._entries[self.canonical(name)]

    def aliases_of(self, name: str) -> list[str]:
        key = self.canonical(name)
        return [a for a, k in self._aliases.items() if k == key]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __contains__(self, name) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        return key in self._entries or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
