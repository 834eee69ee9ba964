"""Spec section "tokens": vocabulary, token ids and embedding lookup."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance import clause, needs
from conformance.judge import oracle
from conformance.judge.adapter import ImplementationError
from conformance.judge.assertions import fail
from conformance.judge.capabilities import DTYPES
from conformance.judge.strategies import sentences


@clause("TOK-VOCAB")
@needs("build_vocab")
@given(sentence=sentences())
def test_vocabulary_is_sorted_distinct_words(implementation, sentence):
    vocab = implementation.call("build_vocab", sentence)
    expected = oracle.vocabulary(sentence)
    if not isinstance(vocab, dict):
        fail(f"build_vocab returned a {type(vocab).__name__}; expected a dict word -> id")
    if vocab != expected:
        fail(f"build_vocab({sentence!r}) returned {vocab!r}; expected {expected!r}")


@clause("TOK-IDS")
@needs("token_ids")
@given(sentence=sentences())
def test_token_ids_follow_the_sentence(implementation, sentence):
    vocab = oracle.vocabulary(sentence)
    ids = implementation.tensor("token_ids", sentence, vocab)
    expected = [vocab[w] for w in oracle.words(sentence)]
    if ids.dtype != torch.int64:
        fail(f"token_ids returned dtype {ids.dtype}; expected int64")
    if ids.tolist() != expected:
        fail(f"token_ids({sentence!r}) returned {ids.tolist()}; expected {expected}")


@clause("TOK-IDS")
@needs("token_ids")
def test_unknown_word_is_an_error_naming_it(implementation):
    vocab = oracle.vocabulary("Life is short")
    try:
        ids = implementation.call("token_ids", "Life is long", vocab)
    except ImplementationError as error:
        if not {"KeyError", "ValueError"} & set(error.raised):
            fail(f"an unknown word raised {error.raised[0] if error.raised else error}; expected KeyError or ValueError")
        if "long" not in error.detail:
            fail(f"the error for an unknown word does not name it: {error.detail!r}")
        return
    fail(f"token_ids('Life is long') with vocabulary {vocab} returned {ids!r} instead of raising an error naming 'long'")


@clause("EMB-LOOKUP")
@needs("embed")
@given(
    vocab_size=st.integers(1, 50),
    d=st.integers(1, 32),
    batch=st.lists(st.integers(1, 3), max_size=2),
    n=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_embedding_is_row_lookup(implementation, device, dtype, vocab_size, d, batch, n, seed):
    if batch and not implementation.claims("batching"):
        batch = []
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab_size, d, generator=generator, dtype=torch.float64).to(device=device, dtype=DTYPES[dtype])
    ids = torch.randint(0, vocab_size, (*batch, n), generator=generator).to(device)
    x = implementation.tensor("embed", ids, table)
    expected = table[ids]
    if tuple(x.shape) != tuple(expected.shape):
        fail(f"embed returned shape {tuple(x.shape)}; expected ids.shape + (d,) = {tuple(expected.shape)}")
    if not torch.equal(x.detach().to(expected.device, expected.dtype), expected):
        bad = (x.detach().to(expected.device, expected.dtype) != expected).nonzero()[0].tolist()
        fail(f"embed differs from table[ids] at {bad}: a lookup must copy the rows exactly")
