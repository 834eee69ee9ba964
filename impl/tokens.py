"""Step 1 of the seed: from a sentence to embedded token vectors."""

from __future__ import annotations

import string

import torch
from torch import Tensor

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def words(sentence: str) -> list[str]:
    """The words of a sentence, punctuation removed ("short," -> "short")."""
    if not isinstance(sentence, str):
        raise TypeError(f"sentence must be a str, not {type(sentence).__name__}")
    return sentence.translate(_NO_PUNCTUATION).split()


def build_vocab(sentence: str) -> dict[str, int]:
    """Sorted distinct words, numbered in order: {'Life': 0, 'dessert': 1, ...}."""
    return {word: index for index, word in enumerate(sorted(set(words(sentence))))}


def token_ids(sentence: str, vocab: dict[str, int]) -> Tensor:
    """The id of every word, in sentence order: tensor([0, 4, 5, 2, 1, 3])."""
    ids = []
    for word in words(sentence):
        if word not in vocab:
            raise KeyError(f"word {word!r} is not in the vocabulary")
        ids.append(vocab[word])
    return torch.tensor(ids, dtype=torch.int64)


def embed(ids: Tensor, table: Tensor) -> Tensor:
    """Row ids[i] of the embedding table for every token: what nn.Embedding does."""
    if ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"ids must be an integer tensor, not {ids.dtype}")
    if table.dim() != 2:
        raise ValueError(f"table must be (vocab_size, d), got shape {tuple(table.shape)}")
    return table[ids]
