"""The self-attention conformance suite.

Run it with `python -m conformance --impl MODULE` or
`pytest --pyargs conformance.tests --impl MODULE`; see README.md.

Test modules mark what they verify with the two decorators below:
@clause("WEIGHTS-SCALE") names the spec clause (one per test) and
@needs("self_attention.causal", ...) the capabilities the test uses, so an
implementation that does not provide them gets "not claimed" instead of a
failure.
"""

from __future__ import annotations

# first of all: `spec`, `golden` and `impl` are the suite's own, whatever the current folder holds
from conformance import parts

parts.pin()

import pytest  # noqa: E402

import spec  # noqa: E402

ENV_IMPL = "ATTENTION_IMPL"
ENV_PROFILE = "CONFORMANCE_PROFILE"
DEFAULT_IMPL = "impl"


def check(profile: str = "quick", call_timeout: float | None = None, **functions):
    """Check the functions of this notebook or script (or those given by spec name) from inside it:
    `from conformance import check; check()`. See conformance/teaching/check.py."""
    import sys

    from conformance.teaching.check import check as run_check

    return run_check(profile, call_timeout, _frame=sys._getframe(1), **functions)


def clause(clause_id: str) -> pytest.MarkDecorator:
    """Mark a test as verifying one spec clause (unknown ids fail at import)."""
    spec.load().clause(clause_id)
    return pytest.mark.clause(clause_id)


def needs(*requirements: str) -> pytest.MarkDecorator:
    """Capabilities a test uses; see Implementation.claims for the syntax."""
    return pytest.mark.needs(*requirements)
