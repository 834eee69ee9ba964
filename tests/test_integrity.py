"""While grading, a submission cannot read the golden files or the suite, and the attempt is named."""

from __future__ import annotations

import textwrap

import pytest

from conformance.worker.sandbox import landlock_abi
from tests.conftest import REPO

needs_landlock = pytest.mark.skipif(landlock_abi() < 1, reason="unavailable: the kernel has no Landlock")


def test_importing_the_answer_is_an_integrity_violation(suite, tmp_path):
    copier = tmp_path / "copier.py"
    copier.write_text(textwrap.dedent("""
        import os
        import numpy as np
        import torch

        def self_attention(x, w_q, w_k, w_v):
            import golden
            data = os.path.join(os.path.dirname(golden.__file__), "data", "self")
            return (torch.from_numpy(np.load(os.path.join(data, "context.npy"))),
                    torch.from_numpy(np.load(os.path.join(data, "weights.npy"))))
    """))
    run = suite(str(copier), "--grading", "-k", "golden")
    assert run.report["verdict"] == "integrity violation"
    assert run.report["score"] == 0
    assert "imported golden" in run.report["integrity_violations"][0]


@needs_landlock
def test_reading_golden_files_by_path_is_refused_and_named(suite, tmp_path):
    reader = tmp_path / "reader.py"
    reader.write_text(textwrap.dedent(f"""
        import numpy as np
        import torch

        DATA = {str(REPO / "golden" / "data" / "self")!r}

        def self_attention(x, w_q, w_k, w_v):
            return (torch.from_numpy(np.load(DATA + "/context.npy")),
                    torch.from_numpy(np.load(DATA + "/weights.npy")))
    """))
    run = suite(str(reader), "--grading", "-k", "golden")
    assert run.report["verdict"] == "integrity violation"
    # the private root has no such path (FileNotFoundError); where there is none, Landlock refuses the read
    assert any(error in run.reason("GOLD-SELF") for error in ("FileNotFoundError", "PermissionError"))
    assert run.report["integrity_violations"][0].startswith(f"opened {REPO / 'golden'}")
    assert run.report["sandbox"]["landlock"].startswith("active")


def test_without_grading_there_is_no_sandbox(suite):
    run = suite("impl", "-k", "golden")
    assert run.report["verdict"] == "conforms" and run.report["sandbox"] == {}
