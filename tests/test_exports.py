"""Every public package lists exactly its public names in __all__."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = ["aggregates", "stores", "runtime"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_resolve(name: str) -> None:
    """Each name in __all__ is importable from the package."""
    module = importlib.import_module(name)
    for public in module.__all__:
        assert getattr(module, public) is not None, public


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_are_in_all(name: str) -> None:
    """Each public (non-underscore, non-module) attribute is listed in __all__."""
    module = importlib.import_module(name)
    missing = [
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not inspect.ismodule(value)
        and attr not in {"annotations", "TYPE_CHECKING", "Any"}
        and attr not in module.__all__
    ]
    assert missing == []


@pytest.mark.parametrize("name", PACKAGES)
def test_public_names_have_docstrings(name: str) -> None:
    """Every exported class and function carries a docstring."""
    module = importlib.import_module(name)
    undocumented = [
        public
        for public in module.__all__
        if (inspect.isclass(obj := getattr(module, public)) or inspect.isfunction(obj))
        and not inspect.getdoc(obj)
    ]
    assert undocumented == []
