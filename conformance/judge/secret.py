"""The course secret that seeds the grading examples.

Under the public profiles every run draws the same examples (derandomized), so anyone can run the
suite once with an implementation that logs its inputs, compute the answers offline and submit a
lookup table. A course secret makes the `grade` profile draw examples that only the judge can know:
the rubric's `seed = "..."`, overridden by $CONFORMANCE_GRADING_SEED (so a teacher can rotate it
without editing the rubric or rebuilding the autograder).

Each hypothesis test gets its own seed, sha256(secret, test id), set as the test's
`_hypothesis_internal_use_seed` just before it runs: what `@hypothesis.seed` sets, and what hypothesis'
get_random_for_wrapped_test reads before `derandomize`. The same secret therefore draws the same
examples for every student (a reproducible grade), another secret draws others, and no secret leaves
the public examples exactly as they are.

The secret stays in the judge: it is never put on a command line (/proc/PID/cmdline is readable by
every process), it is taken out of the judge's os.environ before a worker starts (a plain worker inherits
it; the judge's /proc/PID/environ still shows it, which the sandbox's PID namespace, Landlock and uid keep
from the submission), and no report names it, not even as a fingerprint (one would let a student check
guesses offline).

Light: no torch, so the command line can use it before it starts a worker.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager

ENV_SEED = "CONFORMANCE_GRADING_SEED"
# the profiles whose examples a course secret draws. Not `quick`: check() runs the judge on the student's
# own machine, where a secret would be no secret; not `ci`/`fast`: the same examples every run is what they
# are for; not `dev`/`thorough`: they are random already
SECRET_PROFILES = frozenset({"grade"})
# a secret is only as good as it is hard to guess: feedback shows failing examples, and a student could try
# candidate secrets offline until the suite draws the same ones
MIN_LENGTH = 16
HOW_TO_MAKE_ONE = "e.g. the output of: python -c \"import secrets; print(secrets.token_hex(16))\""

# what a report says about its examples (never the secret, nor anything derived from it)
FROM_SECRET = "drawn from the course secret"
PUBLIC = "public (derandomized)"
RANDOM = "random (a new draw every run)"


class SecretError(ValueError):
    """A course secret that cannot be used; the message says where it came from, never its value."""


def check_secret(value: object, where: str) -> str:
    """`value` if it is a usable secret, else SecretError naming `where` it came from."""
    if not isinstance(value, str):
        raise SecretError(f"{where} must be a string (the course secret), got {type(value).__name__}")
    if not value.strip():
        raise SecretError(f"{where} is empty; give the course secret ({HOW_TO_MAKE_ONE}) or leave it out")
    if len(value) < MIN_LENGTH:
        raise SecretError(f"{where} is shorter than {MIN_LENGTH} characters: a short secret can be guessed; "
                          f"use a long random string ({HOW_TO_MAKE_ONE})")
    return value


def course_secret(rubric_seed: str, environ: Mapping[str, str]) -> str:
    """The secret in force: $CONFORMANCE_GRADING_SEED when set, else the rubric's seed; '' for neither."""
    if ENV_SEED in environ:
        return check_secret(environ[ENV_SEED], f"${ENV_SEED}")
    return rubric_seed


def examples_drawn(profile: str, secret: str, derandomized: bool) -> str:
    """What the report says about the examples of a run under `profile`: FROM_SECRET, PUBLIC or RANDOM."""
    if secret and profile in SECRET_PROFILES:
        return FROM_SECRET
    if not derandomized:
        return RANDOM
    if secret:  # a teacher who forgot --profile grade reads why the secret did not apply
        return f"{PUBLIC}; the course secret applies to --profile {', '.join(sorted(SECRET_PROFILES))} only"
    return PUBLIC


def seed_of_test(secret: str, test_id: str) -> int:
    """The seed of one test (its id without the rootdir, parameters included): 128 bits of
    sha256(secret, test id), so each test, and each parameter of a test, draws its own examples."""
    digest = hashlib.sha256(b"attention-conformance examples\0" + secret.encode() + b"\0" + test_id.encode())
    return int.from_bytes(digest.digest()[:16], "big")


@contextmanager
def withheld(environ: MutableMapping[str, str] = os.environ) -> Iterator[str | None]:
    """Take $CONFORMANCE_GRADING_SEED out of `environ` for the block (a worker started meanwhile inherits
    the judge's environment without it); yields its value, or None when it was not set."""
    value = environ.pop(ENV_SEED, None)
    try:
        yield value
    finally:
        if value is not None:
            environ[ENV_SEED] = value
