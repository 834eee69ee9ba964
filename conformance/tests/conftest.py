"""The suite's `cases` fixture: each test makes its cases with the clause it verifies bound in."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from conformance.judge.adapter import Implementation
from conformance.judge.cases import Cases


@pytest.fixture
def cases(request: pytest.FixtureRequest, implementation: Implementation, device: str, dtype: str) -> Cases:
    """Cases of the running test: the implementation under test, its device, the property dtype and the
    test's clause (from its @clause marker), which the blocking mechanism reads off the cases."""
    marker = request.node.get_closest_marker("clause")
    return Cases(implementation, device, dtype, marker.args[0] if marker else "")


def pytest_itemcollected(item: pytest.Item) -> None:
    """`cases` is function-scoped (it knows the test's clause) and the same for every example hypothesis draws:
    it holds no state an example could change, so hypothesis' warning about such fixtures does not apply."""
    if "cases" not in getattr(item, "fixturenames", ()):
        return
    test = getattr(item.obj, "__func__", item.obj)
    current = getattr(test, "_hypothesis_internal_use_settings", None)
    if current is None or HealthCheck.function_scoped_fixture in current.suppress_health_check:
        return
    test._hypothesis_internal_use_settings = settings(
        current, suppress_health_check=[*current.suppress_health_check, HealthCheck.function_scoped_fixture])
