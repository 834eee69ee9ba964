"""The pytest11 entry point: the suite's plugins, loaded by every pytest run in the environment
without taking `spec`, `golden` or `impl` from the run's own code: the judge's
(conformance.judge.pytest_plugin, this module's hooks) and, registered beside it, the teaching
plugin (conformance.teaching.pytest_plugin: rubric, Gradescope, feedback, pictures), which adds to
the judge only through the judge's hooks (conformance.judge.hooks).

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
from conformance.teaching import pytest_plugin as _teaching

# the plugin's hooks and fixtures, as attributes of the module pytest registers
globals().update({name: value for name, value in vars(_plugin).items() if not name.startswith("__")})
parts.release()


# (named apart, so that they never replace a hook of the same name in the plugin)
@pytest.hookimpl(specname="pytest_addhooks")
def pytest_teaching_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """The teaching plugin, registered with the judge's: its options and hooks in every run."""
    if not pluginmanager.is_registered(_teaching):
        pluginmanager.register(_teaching, "attention-conformance-teaching")


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
