"""Homework 3: self-attention from scratch.

Alice -- I implemented every function of the assignment.
"""

import math
import string

import torch

# --- tokens -------------------------------------------------------------------

def _clean_words(sentence):
    table = str.maketrans("", "", string.punctuation)
    return sentence.translate(table).split()


def build_vocab(sentence):
    words = sorted(set(_clean_words(sentence)))
    return {word: idx for idx, word in enumerate(words)}


def token_ids(sentence, vocab):
    ids = []
    for word in _clean_words(sentence):
        if word not in vocab:
            raise KeyError(f"unknown word: {word!r}")
        ids.append(vocab[word])
    return torch.tensor(ids, dtype=torch.long)


def embed(ids, table):
    # plain row lookup, no one-hot tricks
    return table[ids]


# --- building blocks ----------------------------------------------------------

def project(x, weight):
    # weight is (d_out, d_in) like nn.Linear, so we need x @ W^T
    return torch.matmul(x, weight.transpose(-1, -2))


def attention_scores(queries, keys):
    return torch.matmul(queries, keys.transpose(-1, -2))


def _stable_softmax(s):
    """Softmax over the last axis. Rows that are entirely -inf come out as zeros."""
    row_max = s.amax(dim=-1, keepdim=True)
    # a fully masked row has max = -inf; shift by 0 there so we don't get nan
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)
    e = torch.exp(s - row_max)
    total = e.sum(dim=-1, keepdim=True)
    total = torch.where(total == 0, torch.ones_like(total), total)
    return e / total


def attention_weights(scores, d_k, causal=False, mask=None):
    s = scores / math.sqrt(d_k)
    allowed = None
    if mask is not None:
        allowed = mask.to(torch.bool)
    if causal:
        n_q, n_kv = s.shape[-2], s.shape[-1]
        tri = torch.ones(n_q, n_kv, dtype=torch.bool, device=s.device).tril()
        allowed = tri if allowed is None else (allowed & tri)
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    return _stable_softmax(s)


# --- attention ----------------------------------------------------------------

def cross_attention(x_q, x_kv, w_q, w_k, w_v, causal=False):
    q = project(x_q, w_q)
    k = project(x_kv, w_k)
    v = project(x_kv, w_v)
    w = attention_weights(attention_scores(q, k), q.shape[-1], causal=causal)
    return w @ v, w


def self_attention(x, w_q, w_k, w_v, causal=False):
    return cross_attention(x, x, w_q, w_k, w_v, causal=causal)


def multihead_attention(x, w_q, w_k, w_v, causal=False):
    # add a head axis in front of the tokens: (..., 1, n, d_in) @ (h, d_in, d) -> (..., h, n, d)
    xh = x.unsqueeze(-3)
    return cross_attention(xh, xh, w_q, w_k, w_v, causal=causal)


def multihead_attention_concat(x, w_q, w_k, w_v, w_o=None, causal=False):
    heads, weights = multihead_attention(x, w_q, w_k, w_v, causal=causal)
    # (..., h, n, d_v) -> (..., n, h, d_v) -> (..., n, h*d_v): head 0 first, then head 1, ...
    n_heads, d_v = heads.shape[-3], heads.shape[-1]
    joined = heads.transpose(-3, -2).reshape(*heads.shape[:-3], heads.shape[-2], n_heads * d_v)
    if w_o is not None:
        joined = project(joined, w_o)
    return joined, weights
