"""Read the numbers the seed notebook printed (its outputs, not its code)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

# The seed lives beside the repository in this workplace; elsewhere it is absent
SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "self_attention_from_scratch.txt"


def printed_outputs(text: str) -> dict:
    """vocab, token ids and the embedded sentence as printed by the notebook."""
    vocab = ast.literal_eval(re.search(r"^\{'Life'.*\}$", text, re.M).group(0))
    ids = ast.literal_eval(re.search(r"^tensor\((\[[\d, ]+\])\)$", text, re.M).group(1))
    block = re.search(r"torch\.Size\(\[6, 16\]\)\s*tensor\((\[\[.*?\]\])\)", text, re.S).group(1)
    embedding = ast.literal_eval(" ".join(block.split()))
    return {"vocab": vocab, "token_ids": ids, "embedding": embedding}
