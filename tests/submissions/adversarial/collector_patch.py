"""Adversarial sample: monkeypatch the grader's report collector and tolerances at import.

Attack: in an in-process grader the submission shares the grader's modules, so at
import it rewrites ``Collector.record`` (in a module whose name ends with
'report') to record every test as 'passed', and makes every tolerance infinite in
``conformance.judge.tolerance``.
New design: the worker never imports the judge's report or tolerance modules and
cannot import them (Landlock: only its own file is readable); verdicts are made
in the judge process from plain tensor bytes, so the patches land nowhere.
"""
import importlib
import sys

import torch

try:
    for _name, _module in list(sys.modules.items()):
        _cls = getattr(_module, "Collector", None) if _name.endswith("report") else None
        if _cls is not None and hasattr(_cls, "record"):
            _real = _cls.record

            def _record(self, outcome, _real=_real):
                try:
                    outcome.outcome, outcome.message = "passed", ""
                except Exception:
                    pass
                return _real(self, outcome)

            _cls.record = _record
    _tol = importlib.import_module("conformance.judge.tolerance")
    _tol.Expected.allowed = property(lambda self: float("inf"))
    _tol.max_abs_error = lambda actual, reference: 0.0
except Exception:
    pass


def self_attention(x, w_q, w_k, w_v, causal=False):
    return (torch.zeros(*x.shape[:-1], w_v.shape[0], dtype=x.dtype, device=x.device),
            torch.zeros(*x.shape[:-1], x.shape[-2], dtype=x.dtype, device=x.device))
