"""Networks as plain ``nn.Module``s: no Lightning in them, so they can be reused or tested alone."""

from __future__ import annotations

import torch
from torch import nn


class SeedCNN(nn.Module):
    """The seed's CNN, layer for layer (and with its parameter names, so its weights load as they are).

    conv 3→32 (3×3, pad 1), ReLU, maxpool 2, conv 32→64, ReLU, maxpool 2, linear 4096→64, ReLU,
    linear 64→10. ``dropout`` (0 in the seed) acts before each of the two linear layers.

    The forward pools before the ReLU: max-pooling commutes with any increasing function, so the
    output is bit for bit the seed's, but the ReLU then runs on a quarter of the values. On the
    2-core CPU with channels_last this made a training step at batch 32 about 1.3x faster in fp32
    and 1.4x in bf16 (docs/benchmarks.md).
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(64 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.pool(self.conv1(images)))
        x = torch.relu(self.pool(self.conv2(x)))
        x = torch.relu(self.fc1(self.dropout(x.flatten(1))))
        return self.fc2(self.dropout(x))
