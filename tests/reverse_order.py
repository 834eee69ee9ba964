"""A pytest plugin for the suite's own tests (`-p tests.reverse_order`): the suite's tests run in reverse order,
so that a verdict that depended on which clause was judged first would show."""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.reverse()
