"""Networks as plain ``nn.Module``s: no Lightning in them, so they can be reused or tested alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeedCNN(nn.Module):
    """The seed's CNN, layer for layer (and with its parameter names, so its weights load as they are).

    conv 3→32 (3×3, pad 1), ReLU, maxpool 2, conv 32→64, ReLU, maxpool 2, linear 4096→64, ReLU,
    linear 64→10. ``dropout`` (0 in the seed) acts before each of the two linear layers.

    The forward pools before the ReLU: max-pooling commutes with any increasing function, so the
    output is bit for bit the seed's, but the ReLU then runs on a quarter of the values, which makes
    a training step at batch 32 measurably faster on the CPU (docs/benchmarks.md).
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


class ConvGroup(nn.Module):
    """airbench's block: conv, max-pool 2, BatchNorm, GELU, conv, BatchNorm, GELU.

    The BatchNorms learn a bias only (their scale stays 1), as in airbench; the convolutions start
    as identity maps on their first input channels (Dirac), which lets a short run train them fast.
    """

    def __init__(self, in_channels: int, out_channels: int, batchnorm_momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding="same", bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels, eps=1e-12, momentum=batchnorm_momentum)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding="same", bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels, eps=1e-12, momentum=batchnorm_momentum)
        for conv in (self.conv1, self.conv2):
            nn.init.dirac_(conv.weight.data[: conv.in_channels])
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """The network of airbench94 (Keller Jordan, 2024), the fastest known CIFAR-10 trainer.

    A frozen 2×2 convolution whose filters whiten the image patches (set from data by
    ``init_whitening``; its bias trains), three ConvGroups of widths 64/256/256, a max-pool to one
    pixel (3×3 for a 32×32 image), and a linear layer whose output is scaled by 1/9. 1.97M parameters.
    ``batchnorm_momentum`` is torch's (the weight of the new batch): airbench's 0.6 is the weight kept.
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (64, 256, 256),
        batchnorm_momentum: float = 0.4,
        output_scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        patch_size = 2
        whiten_width = 2 * 3 * patch_size**2  # every whitening filter and its negative
        self.whiten = nn.Conv2d(3, whiten_width, kernel_size=patch_size, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        self.groups = nn.Sequential(
            ConvGroup(whiten_width, widths[0], batchnorm_momentum),
            ConvGroup(widths[0], widths[1], batchnorm_momentum),
            ConvGroup(widths[1], widths[2], batchnorm_momentum),
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.output_scale = output_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(images)))
        x = F.adaptive_max_pool2d(x, 1).flatten(1)  # the 3×3 left of a 32×32 image, or any other size
        return self.head(x) * self.output_scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first layer's filters to the eigenvectors of the covariance of all 2×2 patches of
        ``images`` (normalised, un-augmented), each scaled by 1/sqrt(eigenvalue + eps), and their negatives.

        The first layer then hands the next one decorrelated inputs of unit variance, which is what
        lets airbench train in so few steps.
        """
        channels, (height, width) = images.shape[1], self.whiten.kernel_size
        patches = images.float().unfold(2, height, 1).unfold(3, width, 1).transpose(1, 3)
        patches = patches.reshape(-1, channels * height * width)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues[:, None] + eps)).flip(0)
        filters = filters.reshape(-1, channels, height, width)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
