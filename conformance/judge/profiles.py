"""The suite's hypothesis profiles, registered on import (light: no torch, so the CLI can read them
before it starts a worker)."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

_QUIET_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# no "explain" phase: its coverage notes about the suite's own lines would only confuse the reader
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
PROFILES = {
    # CI: same examples every run (no flakes), no example database, bounded; failures shrunk to small examples
    "ci": dict(derandomize=True, database=None, max_examples=10, phases=_PHASES),
    # the same examples without shrinking: for running many implementations (mutation matrix)
    "fast": dict(derandomize=True, database=None, max_examples=10, phases=_PHASES[:-1]),
    # batch grading: ci's examples, failures shrunk for the student to read, within SHRINK_BOUNDS
    "grade": dict(derandomize=True, database=None, max_examples=10, phases=_PHASES),
    # check() in a notebook: a few seconds; ci's first examples, failures shrunk within SHRINK_BOUNDS
    "quick": dict(derandomize=True, database=None, max_examples=3, phases=_PHASES),
    # development: random, remembers failures in .hypothesis/
    "dev": dict(max_examples=50, phases=_PHASES),
    # before a release or when hunting a bug
    "thorough": dict(max_examples=500, phases=_PHASES),
}
DEFAULT_PROFILE = "ci"
# the profiles that remember failures, each implementation in its own .hypothesis/conformance/<target>; said
# here, not inherited: under a CI variable hypothesis' own default profile has no database at all
REMEMBERING = ("dev", "thorough")
# (successful shrinks, seconds of shrinking) per failing test, instead of hypothesis' 500 and 300 s: a slow
# submission must not spend its whole time limit shrinking; 30 shrinks already give small examples (the sample
# class: every element a failure names has indices <= 11, as with 100 shrinks; unshrunk: up to 162). Batch
# grading runs two judges and their workers on two cores: one second of shrinking stopped a float64 failure
# at index 47 there, so a graded failure gets three; 30 shrinks stay the usual bound
SHRINK_BOUNDS = {"grade": (30, 3.0), "quick": (30, 1.0)}
for _name, _options in PROFILES.items():
    settings.register_profile(
        f"conformance-{_name}",
        deadline=None,
        suppress_health_check=_QUIET_CHECKS,
        print_blob=False,
        report_multiple_bugs=False,  # one clear failure per test, not an exception group
        **_options,
    )


def bound_shrinking(name: str) -> None:
    """Apply the profile's SHRINK_BOUNDS in this process (and the processes it forks), if it has any.

    Hypothesis has no setting for them; it documents its engine's MAX_SHRINKS and MAX_SHRINKING_SECONDS
    as the constants to change.
    """
    if name in SHRINK_BOUNDS:
        from hypothesis.internal.conjecture import engine

        engine.MAX_SHRINKS, engine.MAX_SHRINKING_SECONDS = SHRINK_BOUNDS[name]
