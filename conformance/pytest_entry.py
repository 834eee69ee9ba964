"""The pytest11 entry point: the suite's plugin (conformance.judge.pytest_plugin), loaded by every
pytest run in the environment without taking `spec`, `golden` or `impl` from the run's own code.

Importing the plugin pins those names to the suite's packages (conformance.parts); once it is
imported they are released again, so a user's own tests in a folder holding spec.py get their own
spec.py. A run that collects the suite (`--pyargs conformance.tests`, a path in the suite's
folders, the checkout itself) pins them for good before any test module or conftest imports them;
so does the command line (conformance.cli) before it starts pytest. The plugin's hooks and
fixtures are this module's attributes; they do nothing for tests that carry no @clause marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance import parts
from conformance.judge import pytest_plugin as _plugin

# the plugin's hooks and fixtures, as attributes of the module pytest registers
globals().update({name: value for name, value in vars(_plugin).items() if not name.startswith("__")})
parts.release()


# (named apart, so that they never replace a hook of the same name in the plugin)
@pytest.hookimpl(tryfirst=True, specname="pytest_load_initial_conftests")
def pytest_parts_load_initial_conftests(early_config: pytest.Config) -> None:
    """Before conftests and test modules import anything: keep the suite's parts if this run is the suite's."""
    namespace = early_config.known_args_namespace
    targets = [str(t) for t in (getattr(namespace, "file_or_dir", None) or [])]
    if parts.claims_run(targets, Path(early_config.invocation_params.dir), bool(getattr(namespace, "pyargs", False))):
        parts.keep()


@pytest.hookimpl(tryfirst=True, specname="pytest_collect_file")
def pytest_parts_collect_file(file_path: Path) -> None:
    """A run that reaches the suite's tests some other way (a symbolic link, testpaths) gets its parts too."""
    if not parts.pinned() and file_path.resolve().is_relative_to(parts.PACKAGE / "tests"):
        parts.keep()
