"""Regenerate the golden tensors: `python -m golden.generate [--out DIR]`.

The seeded run follows the seed notebook and the post it is taken from, and
draws its random numbers in this order (the order is part of the golden data:
changing it changes every file):

1. torch.manual_seed(123); Embedding(6, 16)              -> the embedding table
2. torch.manual_seed(123); rand(24, 16), rand(24, 16), rand(28, 16)
                                                          -> W_Q, W_K, W_V
3. continuing: rand(3, 24, 16), rand(3, 24, 16), rand(3, 28, 16)
                                                          -> multi-head W_Q, W_K, W_V
4. continuing: rand(8, 16)                                -> x_kv, the second input
5. continuing: rand(16, 84)                               -> W_o (16 x h·d_v)

Random draws are float32 as in the seed. Everything computed from them is
evaluated by the reference implementation in float64 from the float32 inputs
and rounded once to float32: the files hold the correctly rounded answer, so
they do not depend on the summation order of this machine's BLAS, and they
reproduce bit for bit wherever torch's CPU generator gives the same draws.
Each step-wise tensor is computed from the *stored* (rounded) tensors of the
step before, so every check feeds exactly the inputs its expected output was
computed from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import impl
from golden import DATA_DIR, MANIFEST_FILE

SEED = 123
SENTENCE = "Life is short, eat dessert first"
D_Q = D_K = 24
D_V = 28
HEADS = 3
N_KV = 8
D_O = 16
COMMAND = "python -m golden.generate"


def _exact(fn, *tensors: torch.Tensor, **kwargs) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """fn evaluated in float64 on the (float32) inputs, rounded once to float32."""
    result = fn(*(t.double() for t in tensors), **kwargs)
    if isinstance(result, tuple):
        return tuple(r.float() for r in result)
    return result.float()


def seeded_run() -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """The seeded run, step by step. Returns (json files, tensors) keyed by file stem."""
    vocab = impl.build_vocab(SENTENCE)
    ids = impl.token_ids(SENTENCE, vocab)

    torch.manual_seed(SEED)
    table = torch.nn.Embedding(len(vocab), 16).weight.detach().clone()
    x = impl.embed(ids, table)
    d = x.shape[1]

    torch.manual_seed(SEED)
    w_q, w_k, w_v = torch.rand(D_Q, d), torch.rand(D_K, d), torch.rand(D_V, d)
    mh_w_q, mh_w_k, mh_w_v = torch.rand(HEADS, D_Q, d), torch.rand(HEADS, D_K, d), torch.rand(HEADS, D_V, d)
    x_kv = torch.rand(N_KV, d)
    w_o = torch.rand(D_O, HEADS * D_V)

    queries = _exact(impl.project, x, w_q)
    keys = _exact(impl.project, x, w_k)
    values = _exact(impl.project, x, w_v)
    omega = _exact(impl.attention_scores, queries, keys)
    step_weights = _exact(impl.attention_weights, omega, d_k=D_K)

    context, weights = _exact(impl.self_attention, x, w_q, w_k, w_v)
    causal_context, causal_weights = _exact(impl.self_attention, x, w_q, w_k, w_v, causal=True)
    mh_context, mh_weights = _exact(impl.multihead_attention, x, mh_w_q, mh_w_k, mh_w_v)
    mh_causal_context, mh_causal_weights = _exact(impl.multihead_attention, x, mh_w_q, mh_w_k, mh_w_v, causal=True)
    concat, _ = _exact(impl.multihead_attention_concat, x, mh_w_q, mh_w_k, mh_w_v)
    output, _ = _exact(impl.multihead_attention_concat, x, mh_w_q, mh_w_k, mh_w_v, w_o)
    cross_context, cross_weights = _exact(impl.cross_attention, x, x_kv, w_q, w_k, w_v)
    cross_causal_context, cross_causal_weights = _exact(impl.cross_attention, x, x_kv, w_q, w_k, w_v, causal=True)

    documents = {"tokens/vocab": vocab}
    tensors = {
        "tokens/ids": ids,
        "embedding/table": table,
        "embedding/x": x,
        "projection/w_q": w_q,
        "projection/w_k": w_k,
        "projection/w_v": w_v,
        "projection/queries": queries,
        "projection/keys": keys,
        "projection/values": values,
        "scores/omega": omega,
        "scores/weights": step_weights,
        "self/weights": weights,
        "self/context": context,
        "causal/weights": causal_weights,
        "causal/context": causal_context,
        "multihead/w_q": mh_w_q,
        "multihead/w_k": mh_w_k,
        "multihead/w_v": mh_w_v,
        "multihead/w_o": w_o,
        "multihead/weights": mh_weights,
        "multihead/context": mh_context,
        "multihead/causal_weights": mh_causal_weights,
        "multihead/causal_context": mh_causal_context,
        "multihead/concat": concat,
        "multihead/output": output,
        "cross/x_kv": x_kv,
        "cross/weights": cross_weights,
        "cross/context": cross_context,
        "cross/causal_weights": cross_causal_weights,
        "cross/causal_context": cross_causal_context,
    }
    return documents, tensors


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(out_dir: Path) -> dict:
    """Run the seeded run and write data files plus manifest.json into out_dir."""
    documents, tensors = seeded_run()
    data_dir = out_dir / DATA_DIR.name
    files: dict[str, dict] = {}
    for stem, document in documents.items():
        path = data_dir / f"{stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        files[f"{stem}.json"] = {"kind": "json", "sha256": sha256(path)}
    for stem, tensor in tensors.items():
        path = data_dir / f"{stem}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        array = tensor.numpy()
        np.save(path, array, allow_pickle=False)
        files[f"{stem}.npy"] = {
            "kind": "tensor",
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "sha256": sha256(path),
        }
    manifest = {
        "description": "Golden tensors of the seeded self-attention run; see golden/generate.py for the RNG order.",
        "command": COMMAND,
        "seed": SEED,
        "sentence": SENTENCE,
        "dimensions": {"d": 16, "d_q": D_Q, "d_k": D_K, "d_v": D_V, "heads": HEADS, "n_kv": N_KV, "d_o": D_O},
        "rng_order": [
            f"manual_seed({SEED}); Embedding(6, 16)",
            f"manual_seed({SEED}); rand({D_Q}, 16) W_Q; rand({D_K}, 16) W_K; rand({D_V}, 16) W_V",
            f"rand({HEADS}, {D_Q}, 16) multi-head W_Q; rand({HEADS}, {D_K}, 16) W_K; rand({HEADS}, {D_V}, 16) W_V",
            f"rand({N_KV}, 16) x_kv",
            f"rand({D_O}, {HEADS * D_V}) W_o",
        ],
        "computation": "random draws float32; every computed tensor evaluated in float64 by impl and rounded once to float32",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "platform": platform.platform(),
        "machine": platform.machine(),
        "files": dict(sorted(files.items())),
    }
    (out_dir / MANIFEST_FILE.name).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DATA_DIR.parent,
        help="directory to write data/ and manifest.json into (default: the golden package itself)",
    )
    args = parser.parse_args(argv)
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        parser.error(f"--out {out_dir} exists and is not a directory")
    target = out_dir / DATA_DIR.name
    if target.exists() and not (out_dir / MANIFEST_FILE.name).exists():
        parser.error(f"refusing to replace {target}: there is no {MANIFEST_FILE.name} beside it, so it is not golden data")
    out_dir.mkdir(parents=True, exist_ok=True)
    # write into a scratch directory first so a failed run never leaves half a golden set
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        manifest = write(Path(scratch))
        if target.exists():
            shutil.rmtree(target)
        shutil.move(Path(scratch) / DATA_DIR.name, target)
        shutil.move(Path(scratch) / MANIFEST_FILE.name, out_dir / MANIFEST_FILE.name)
    print(f"wrote {len(manifest['files'])} files and {MANIFEST_FILE.name} to {out_dir}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
