"""Networks as plain ``nn.Module``s: no Lightning in them, so they can be reused or tested alone."""

from __future__ import annotations

import torch
from torch import nn


class SeedCNN(nn.Module):
    """The seed's CNN, layer for layer (and with its parameter names, so its weights load as they are).

    conv 3→32 (3×3, pad 1), ReLU, maxpool 2, conv 32→64, ReLU, maxpool 2, linear 4096→64, ReLU,
    linear 64→10. ``dropout`` (0 in the seed) acts before each of the two linear layers.
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
        x = self.pool(torch.relu(self.conv1(images)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(self.dropout(x.flatten(1))))
        return self.fc2(self.dropout(x))
