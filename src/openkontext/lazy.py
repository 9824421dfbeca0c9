"""Package namespaces whose names are imported on first use, so that importing the package (or a
light submodule of it, such as a CLI) does not pull in torch and the model code."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """-> (`__getattr__`, `__dir__`, `__all__`) for `package`, whose submodule `m` provides the
    names `exports[m]`: `__getattr__, __dir__, __all__ = lazy_exports(__name__, {...})`."""
    module_of = {name: module for module, names in exports.items() for name in names}
    names = sorted(module_of)

    def getattr_(name: str):
        if name in module_of:
            return getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *names})

    return getattr_, dir_, names
