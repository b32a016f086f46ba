"""Weight penalties as pure functions of the parameters.

They cover weight matrices and convolution kernels, not biases: a bias shifts a unit's output and
does not make the model more complex, so shrinking it only costs fit (the usual practice, as in
nanoGPT's weight-decay groups). The L2 penalty is the plain sum of squares (ridge), not half of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

Regularization = Literal["none", "l1", "l2", "elastic_net"]


def penalized_weights(module: nn.Module) -> list[torch.Tensor]:
    """Every trained parameter with two or more dimensions: weights and kernels, not biases or norm scales."""
    return [p for p in module.parameters() if p.ndim >= 2 and p.requires_grad]


def l1_penalty(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """Lasso: the sum of |w|. Its constant pull towards zero makes weights exactly sparse."""
    return torch.stack([w.abs().sum() for w in weights]).sum()


def l2_penalty(weights: Iterable[torch.Tensor]) -> torch.Tensor:
    """Ridge: the sum of w². Its pull is proportional to w, so it shrinks all weights without zeroing them."""
    return torch.stack([w.square().sum() for w in weights]).sum()


def penalty(
    weights: list[torch.Tensor], regularization: Regularization, reg_lambda: float, l1_ratio: float = 0.5
) -> torch.Tensor | None:
    """λ·L1, λ·L2 or λ·(ratio·L1 + (1 − ratio)·L2) (elastic net, as scikit-learn mixes it); None for "none"."""
    if regularization == "none":
        return None
    if regularization == "l1":
        return reg_lambda * l1_penalty(weights)
    if regularization == "l2":
        return reg_lambda * l2_penalty(weights)
    return reg_lambda * (l1_ratio * l1_penalty(weights) + (1 - l1_ratio) * l2_penalty(weights))
