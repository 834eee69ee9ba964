"""Correct variants of the pipeline, each written independently, for the mutation matrix (tests/matrix.py)."""

# What every variant here claims: all dtypes, both devices, batching, autograd, weights.
CAPABILITIES = {
    "array": "torch",
    "dtypes": ["float64", "float32", "float16", "bfloat16"],
    "devices": ["cpu", "cuda"],
    "batching": True,
    "autograd": True,
    "returns_weights": True,
}
