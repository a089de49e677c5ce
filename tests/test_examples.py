"""Every runnable example in an app module's docstrings runs as printed: a new task, mask policy or
estimator shows its use there and is tested by that alone."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bilevel", "client_app", "rabo_protocol", "rabo_pruning", "rabo_strategy", "server_app", "tasks")
WITH_EXAMPLES = [".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                 for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
                 if ">>> " in path.read_text()]


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_the_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, f"{name}: {result.failed} of {result.attempted}"
