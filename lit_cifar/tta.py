"""Test-time augmentation: a network's logits for a batch, averaged over augmented copies of it (airbench's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

TestTimeAugmentation = Literal["none", "flip", "flip_translate"]


def tta_logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    mode: TestTimeAugmentation,
    logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """``forward(images)`` averaged, in float32, with the logits of augmented copies of ``images``.

    ``flip``: the mirror image, half and half. ``flip_translate``: that average, half, and a quarter each
    of the two copies shifted by one pixel diagonally (up-left and down-right, reflected borders), each
    itself averaged with its mirror. ``none``: the plain logits. ``logits``: ``forward(images)``, when the
    caller has it already.
    """
    logits = forward(images) if logits is None else logits
    if mode == "none":
        return logits
    mirrored = (logits.float() + forward(images.flip(-1)).float()) / 2
    if mode == "flip":
        return mirrored
    height, width = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    shifted = (padded[..., :height, :width], padded[..., 2:, 2:])
    translated = sum((forward(s).float() + forward(s.flip(-1)).float()) / 4 for s in shifted)
    return (mirrored + translated) / 2
