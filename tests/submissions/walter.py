"""Walter -- attention homework."""
from impl import cross_attention, self_attention

__all__ = ["self_attention", "cross_attention"]
