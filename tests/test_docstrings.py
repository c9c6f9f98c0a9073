"""The examples in glioseg's docstrings run and print what they show (scikit-image style)."""

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import glioseg


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(glioseg.__path__, "glioseg."):
        if info.name.endswith("__main__"):  # importing it runs the command
            continue
        origin = importlib.util.find_spec(info.name).origin
        if origin and ">>> " in Path(origin).read_text(encoding="utf-8"):
            names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_package_has_examples():
    assert len(MODULES) >= 10, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    if result.attempted == 0:
        pytest.skip(f"every example in {name} is marked +SKIP (it needs data or a trained model)")
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
