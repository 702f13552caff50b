"""Public names that load their submodule on first use (PEP 562), so that importing a package costs nothing until a
name is used: `diti_hf`, `diti_hf.pipelines` and `diti_hf.evaluation` start without torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, table: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    r"""
    The module-level `__getattr__` and `__dir__` of `package` for the public names of `table`.

    Args:
        package (`str`): The package's `__name__`.
        table (`Mapping[str, str]`): Public name → the submodule (relative to `package`) that defines it.

    Returns:
        `tuple`: `(__getattr__, __dir__)`, to assign in the package's `__init__.py`.
    """
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{table[name]}"), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
