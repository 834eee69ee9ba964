"""Dave's submission (package layout: the code lives in attention.py)."""
from .attention import multihead_attention, self_attention

__all__ = ["self_attention", "multihead_attention"]
