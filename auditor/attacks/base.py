"""What evasion attacks, energy-latency searches and input defences share: how a class is
registered under the name scenario files use."""

from __future__ import annotations

from typing import Callable, TypeVar

from ..registry import Registry

T = TypeVar("T", bound=type)


def registrar(registry: Registry) -> Callable[..., Callable[[T], T]]:
    """The class decorator of ``registry``: ``@register("name", aliases=(...))`` sets the class's
    ``name`` and adds it to the registry, so the module that defines a class is all it takes."""
    def register(name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        def deco(cls: T) -> T:
            cls.name = name
            return registry.add(name, cls, aliases)
        return deco
    return register
