"""Selecting the implementation under test: every bad target gets one clear message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from conformance.judge.adapter import Implementation
from conformance.judge.capabilities import CapabilityError, parse
from conformance.worker.loader import LoadError, parse_target


def write(tmp_path, name: str, source: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_targets_are_parsed_by_form(tmp_path):
    assert parse_target("impl").module == "impl"
    assert parse_target("pkg.mod:ADAPTER").attribute == "ADAPTER"
    assert parse_target("homework.py").path is not None
    assert parse_target(str(tmp_path)).path == tmp_path


@pytest.mark.parametrize("name", ["hw3 (1).py", "homework-3.py", "élève.py", "hw3 10:30.py", "hw3 (1)", "C:\\hw.py"])
def test_a_downloaded_file_name_is_a_path(name):
    """Downloads name files `hw3 (1).py`; a colon is an attribute separator only before a name."""
    target = parse_target(name)
    assert (target.path, target.module, target.attribute) == (Path(name), None, None)
    assert parse_target(f"/tmp/a:b/{name}:Adapter").path == Path(f"/tmp/a:b/{name}")


BODY = """import torch

def self_attention(x, w_q, w_k, w_v, causal=False):
    q, k, v = x @ w_q.T, x @ w_k.T, x @ w_v.T
    weights = torch.softmax(q @ k.T / k.shape[-1] ** 0.5, dim=-1)
    return weights @ v, weights
"""


@pytest.mark.parametrize("name", ["hw3 (1).py", "homework-3.py", "élève.py", "3rd try.py", "torch.py", "hw3 (1)"])
def test_a_submission_loads_by_its_path_whatever_its_name(tmp_path, template, name):
    """Any file name loads, under a sanitized unique module name: torch.py must not replace the torch its own
    `import torch` gets; a package ("hw3 (1)/", its relative import) too."""
    if name.endswith(".py"):
        path = write(tmp_path, name, BODY)
    else:
        path = tmp_path / name
        path.mkdir()
        write(path, "core.py", BODY)
        write(path, "__init__.py", "from .core import self_attention\n")
    implementation = Implementation.load(str(path), template=template)
    try:
        x, w_q, w_k, w_v = (torch.rand(4, 3), torch.rand(5, 3), torch.rand(5, 3), torch.rand(2, 3))
        context, weights = implementation.attention("self_attention", x, w_q, w_k, w_v)
        expected = torch.softmax((x @ w_q.T) @ (x @ w_k.T).T / 5 ** 0.5, dim=-1)
        assert torch.allclose(weights, expected) and torch.allclose(context, expected @ (x @ w_v.T))
    finally:
        implementation.close()


@pytest.mark.parametrize(
    "target, message",
    [
        ("", "no implementation given"),
        ("no_such_module_xyz", "no module named 'no_such_module_xyz'"),
        ("impl:nothing_here", "has no attribute 'nothing_here'"),
        ("missing/homework.py", "no such file or directory"),
    ],
)
def test_unloadable_targets_say_why(target, message):
    with pytest.raises(LoadError, match=message):
        Implementation.load(target)


def test_import_error_inside_the_submission_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.py", "import math\nx = 1 / 0\n")
    with pytest.raises(LoadError, match=r"ZeroDivisionError: division by zero \(at .*broken\.py:2\)"):
        Implementation.load(str(path))


def test_exit_at_import_is_a_load_error(tmp_path):
    path = write(tmp_path, "quits.py", "raise SystemExit(3)\n")
    with pytest.raises(LoadError, match="SystemExit"):
        Implementation.load(str(path))


def test_module_without_any_spec_function_is_rejected(tmp_path):
    path = write(tmp_path, "empty.py", "def attend(x):\n    return x\n")
    with pytest.raises(LoadError, match="provides none of the spec's functions"):
        Implementation.load(str(path))


def test_non_callable_function_name_is_rejected(tmp_path):
    path = write(tmp_path, "odd.py", "self_attention = 3\n")
    with pytest.raises(LoadError, match="self_attention is a int, not a function"):
        Implementation.load(str(path))


def test_functions_present_are_the_claims(tmp_path):
    path = write(tmp_path, "partial.py", "def self_attention(x, w_q, w_k, w_v):\n    pass\n")
    implementation = Implementation.load(str(path))
    assert implementation.claims("self_attention")
    assert not implementation.claims("self_attention.causal")
    assert not implementation.claims("multihead_attention")


def test_object_target_and_class_target(tmp_path):
    write(tmp_path, "adapters.py", """
        class Adapter:
            def self_attention(self, x, w_q, w_k, w_v, causal=False):
                pass
        INSTANCE = Adapter()
    """)
    for target in (f"{tmp_path}/adapters.py:Adapter", f"{tmp_path}/adapters.py:INSTANCE"):
        assert Implementation.load(target).claims("self_attention.causal")


def test_package_directory_target(tmp_path):
    package = tmp_path / "homework"
    package.mkdir()
    write(package, "__init__.py", "from .core import self_attention\n")
    write(package, "core.py", "def self_attention(x, w_q, w_k, w_v):\n    pass\n")
    assert Implementation.load(str(package)).has("self_attention")


@pytest.mark.parametrize(
    "declared, message",
    [
        ({"dtype": ["float32"]}, "unknown keys"),
        ({"array": "tensorflow"}, "must be one of"),  # jax is one (tests/test_jax.py)
        ({"dtypes": "float32"}, "non-empty list"),
        ({"dtypes": ["float8"]}, "unknown entries"),
        ({"array": "numpy", "dtypes": ["bfloat16"]}, "unknown entries"),
        ({"array": "numpy", "autograd": True}, "cannot be True for a numpy"),
        ({"batching": "yes"}, "must be True or False"),
        ([1, 2], "must be a dict"),
    ],
)
def test_malformed_capabilities_are_explained(declared, message):
    with pytest.raises(CapabilityError, match=message):
        parse(declared)


def test_capability_defaults():
    caps = parse(None)
    assert caps.array == "torch" and caps.devices == ("cpu", "cuda") and not caps.autograd
    assert parse({"array": "numpy"}).devices == ("cpu",)
    assert parse({"dtypes": ["float64"]}).property_dtype == "float64"


def test_bad_capabilities_fail_the_load_with_the_module_named(tmp_path):
    path = write(tmp_path, "caps.py", "CAPABILITIES = {'autograd': 'sure'}\ndef self_attention(*a):\n    pass\n")
    with pytest.raises(LoadError, match=r"caps\.py.*autograd"):
        Implementation.load(str(path))


def test_cli_reports_a_load_failure_in_one_message(suite):
    run = suite("no_such_module_xyz")
    assert run.returncode == 4
    assert "cannot check implementation 'no_such_module_xyz': no module named" in run.output
    assert "Traceback" not in run.output
    assert run.report is None
