"""Meta tests: in-process tests of the judge's own helpers (messages, tolerance policy, strategy budgets).

Like array-api-tests' `meta_tests/`, they check the machinery the conformance tests are built from rather
than an implementation: no worker processes, no `implementation` fixture, no `python -m conformance`.
They assert on the information a message carries (indices, numbers, what is allowed), not on its exact
wording. The one helper here, `mentions`, reads numbers back out of a message so that a change of
formatting (``.3g`` to ``.4g``) passes and a lost number fails.
"""

from __future__ import annotations

import math
import re

_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)\b")


def numbers_in(message: str) -> list[float]:
    """Every number written in `message` (indices included), in order."""
    return [float(token) for token in _NUMBER.findall(message)]


def mentions(message: str, value: float, rel: float = 0.05) -> bool:
    """Whether `message` writes `value` (to the 2 significant digits the policy prints; nan and ±inf as such)."""
    for number in numbers_in(message):
        if math.isnan(value):
            if math.isnan(number):
                return True
        elif math.isinf(value) or value == 0:
            if number == value:
                return True
        elif math.isclose(number, value, rel_tol=rel):
            return True
    return False
