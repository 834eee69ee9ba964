"""While grading, a submission cannot read the golden files or import the reference."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

PROBE = textwrap.dedent("""
    import os
    import golden
    from conformance import integrity

    path = os.path.join(os.path.dirname(golden.__file__), "data", "self", "context.npy")
    integrity.install()
    open(path, "rb").close()
    print("suite may read")
    with integrity.submission_code():
        for attempt in (lambda: open(path, "rb"), lambda: __import__("impl")):
            try:
                attempt()
                print("allowed")
            except PermissionError as error:
                print("refused:", error)
    print("violations", len(integrity.violations))
""")


def test_guard_refuses_only_submission_code():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert lines[0] == "suite may read"
    assert lines[1].startswith("refused: opened ") and "golden" in lines[1]
    assert lines[2].startswith("refused: imported impl")
    assert lines[3] == "violations 2"


def test_reading_the_answer_during_a_call_is_an_integrity_violation(suite, tmp_path):
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
