"""The method registry: a method id (e.g. 'dm', 'ead-literal') maps to one Method subclass."""
from __future__ import annotations

from typing import Callable

from ..errors import DdflowError
from .base import Method

REGISTRY: dict[str, type[Method]] = {}


def register(method_id: str) -> Callable[[type[Method]], type[Method]]:
    def deco(cls: type[Method]) -> type[Method]:
        if method_id in REGISTRY:
            raise ValueError(f"method id {method_id!r} registered twice")
        REGISTRY[method_id] = cls
        cls.method_id = method_id
        return cls
    return deco


def get_method(method_id: str) -> type[Method]:
    if method_id not in REGISTRY:
        raise DdflowError(f"unknown method {method_id!r}; implemented: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[method_id]
