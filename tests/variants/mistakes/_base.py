"""The correct functions the mistakes below start from: self-, cross- and multi-head attention, nothing else."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tests.variants.correct import CAPABILITIES  # noqa: F401 - the mistakes claim what the correct variants do


def softmax(scaled: Tensor) -> Tensor:
    return torch.softmax(scaled, dim=-1)


def scores_of(q: Tensor, k: Tensor) -> Tensor:
    return q @ k.transpose(-2, -1)


def attend(q: Tensor, k: Tensor, v: Tensor, causal: bool, scores=scores_of, normalise=softmax) -> tuple[Tensor, Tensor]:
    scaled = scores(q, k) / math.sqrt(k.shape[-1])
    if causal:
        future = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
        scaled = scaled.masked_fill(future, float("-inf"))
    weights = normalise(scaled)
    return weights @ v, weights
