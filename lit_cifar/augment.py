"""The seed's augmentation as batched tensor operations on whatever device the batch is on.

The seed ran torchvision's PIL transforms image by image on one CPU thread: flip (p=0.5),
rotation uniform in ±10°, then an affine map with x-shear uniform in ±10° and scale uniform in
[0.8, 1.2], nearest-neighbour sampling, black fill, then normalisation to mean 0.5, std 0.5.
Here each image still draws its own parameters from those distributions, but the flip,
rotation, shear and scale are composed into one 2×2 matrix per image and applied to the whole
batch with a single ``grid_sample``: one resampling instead of two, far cheaper than PIL.

Three backends draw from the same distributions (``--data.augment_backend``):

- ``tensor`` (default): the composed map above, this file's own code;
- ``kornia``: kornia.augmentation's per-sample flip, rotation and affine (two resamplings), an
  optional dependency, slower than ``tensor`` on the CPU (docs/benchmarks.md);
- ``torchvision``: the seed's own torchvision transforms, image by image, on uint8 tensors:
  exact fidelity to the seed, and the slowest.

Beside it, airbench's augmentation for the speedrun (``--data.augmentation crop_flip``: shifts
with reflected borders and an alternating flip, one gather per batch), and the normalisations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from lit_cifar.errors import ConfigError

AugmentBackend = Literal["tensor", "kornia", "torchvision"]
MAX_ROTATION = 10.0  # degrees
MAX_SHEAR = 10.0  # degrees, parallel to the x axis
SCALE = (0.8, 1.2)

Augmentation = Literal["seed", "crop_flip"]
Normalization = Literal["seed", "cifar10"]
# Per-channel (mean, std): the seed's 0.5 and 0.5, or CIFAR-10's training-set statistics (airbench's).
NORMALIZATION = {
    "seed": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def normalize(images: torch.Tensor, normalization: Normalization = "seed") -> torch.Tensor:
    """uint8 images in [0, 255] (or floats in [0, 1]) to floats with the chosen per-channel mean and std."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255)
    mean, std = _statistics(normalization, images.device)
    return (images - mean) / std


def denormalize(images: torch.Tensor, normalization: Normalization = "seed") -> torch.Tensor:
    """``normalize``'s inverse, to floats in [0, 1]: for showing the images a network was given."""
    mean, std = _statistics(normalization, images.device)
    return (images.float() * std + mean).clamp(0, 1)


@functools.cache
def _statistics(normalization: Normalization, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Made once per device: a fresh host-to-GPU copy every batch would make the host wait for the GPU."""
    return tuple(torch.tensor(values, device=device).view(1, -1, 1, 1) for values in NORMALIZATION[normalization])


@functools.cache
def _parameter_ranges(device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, width) of the seed's four random parameters: a coin for the flip, the rotation and the
    shear angle in radians, the scale."""
    low = torch.tensor([0.0, -math.radians(MAX_ROTATION), -math.radians(MAX_SHEAR), SCALE[0]], device=device)
    high = torch.tensor([1.0, math.radians(MAX_ROTATION), math.radians(MAX_SHEAR), SCALE[1]], device=device)
    return low, high - low


def seed_sampling_maps(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Per-image maps (n, 2, 2) from output to input pixel positions, in centred coordinates.

    The seed's transform maps input to output by scale·shear·rotation·flip; ``grid_sample`` asks
    the inverse, where each output pixel reads. It is drawn in inverse form,
    flip · rotation(−angle) · shear(−s) / scale, written out element by element: a handful of
    tensor operations on n numbers, which is what a batch of 32 costs on the CPU.
    """
    low, width = _parameter_ranges(device)
    coin, angle, shear_angle, scale = torch.rand(n, 4, device=device).mul_(width).add_(low).unbind(1)
    flip = torch.where(coin < 0.5, -1.0, 1.0)
    cos, sin, shear = angle.cos(), angle.sin(), shear_angle.tan()
    # [[flip, 0], [0, 1]] @ [[cos, sin], [-sin, cos]] @ [[1, -shear], [0, 1]] / scale
    entries = torch.stack([flip * cos, flip * (sin - cos * shear), -sin, cos + sin * shear], -1)
    return entries.div_(scale[:, None]).view(n, 2, 2)


@functools.cache
def _pixel_centres(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(h·w, 2) pixel centres (x, y) in [-1, 1]: the grid ``affine_grid`` would rebuild on every call."""
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], device=device)
    return F.affine_grid(identity, [1, 1, height, width], align_corners=False).view(-1, 2)


def warp(images: torch.Tensor, sampling: torch.Tensor) -> torch.Tensor:
    """Resample float images (n, c, h, w) through maps (n, 2, 2) from output to input positions,
    nearest neighbour, black outside."""
    n, _, height, width = images.shape
    x, y = _pixel_centres(height, width, images.device).unbind(1)
    # grid = centres @ sampling.T written out as two broadcast products (the same values to the bit where compared,
    # on Zen 4): a batched matrix product of so thin a shape took twice as long there (docs/benchmark-log.md).
    grid = x[:, None] * sampling[:, None, :, 0] + y[:, None] * sampling[:, None, :, 1]  # (n, h·w, 2)
    return F.grid_sample(images, grid.view(n, height, width, 2), mode="nearest", padding_mode="zeros", align_corners=False)


def seed_augment(images: torch.Tensor) -> torch.Tensor:
    """uint8 batch (n, 3, h, w) → augmented float batch in [0, 1], new random parameters per image."""
    pixels = images.float().div_(255)
    return warp(pixels, seed_sampling_maps(len(images), device=images.device))


def kornia_seed_augmentation() -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        import kornia.augmentation as K
    except ImportError:
        raise ConfigError("--data.augment_backend kornia needs kornia: pip install kornia") from None
    # kornia's defaults differ from torchvision's (p=0.5 and bilinear): set to the seed's p=1 and nearest.
    augmentation = K.AugmentationSequential(
        K.RandomHorizontalFlip(p=0.5),
        K.RandomRotation(degrees=MAX_ROTATION, p=1.0, resample="nearest"),
        K.RandomAffine(degrees=0.0, shear=MAX_SHEAR, scale=SCALE, p=1.0, resample="nearest"),
    )
    return lambda images: augmentation(images.float().div_(255))


def torchvision_seed_augmentation() -> Callable[[torch.Tensor], torch.Tensor]:
    from torchvision.transforms import v2

    # Applied image by image: given a batch, v2 transforms draw one set of parameters for all of it.
    transform = v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(MAX_ROTATION),
            v2.RandomAffine(degrees=0.0, shear=MAX_SHEAR, scale=SCALE),
        ]
    )
    return lambda images: torch.stack([transform(image) for image in images]).float().div_(255)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices past either edge mirrored back inside, edge pixel not repeated (``F.pad``'s ``reflect``)."""
    return (size - 1) - ((size - 1) - index.abs()).abs()


def crop_flip_augment(images: torch.Tensor, epoch: int, padding: int = 2) -> torch.Tensor:
    """airbench's augmentation, uint8 batch (n, c, h, w) → float batch in [0, 1]: each image a random
    crop of itself reflect-padded by ``padding`` pixels (a shift of up to ``padding`` each way), and
    mirrored in every other epoch.

    That alternating flip (airbench's) shows every image both ways in any two consecutive epochs,
    where a coin flip per epoch would repeat a view half the time. Which epochs mirror an image
    depends on the parity of its pixel sum: a fixed, evenly split bit per image that needs no
    bookkeeping of which image is which. Shift and mirror become one gather of source pixels.
    """
    n, c, height, width = images.shape
    device = images.device
    shifts = torch.randint(-padding, padding + 1, (2, n, 1), device=device)
    rows = _reflect(torch.arange(height, device=device) + shifts[0], height)  # (n, h)
    cols = _reflect(torch.arange(width, device=device) + shifts[1], width)  # (n, w)
    mirrored = (images.sum((1, 2, 3)) + epoch) % 2 == 1
    cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    source = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, height * width).expand(n, c, -1)
    return images.reshape(n, c, height * width).gather(2, source).view(n, c, height, width).float().div_(255)


def training_augmentation(policy: Augmentation, backend: AugmentBackend = "tensor") -> Callable[[torch.Tensor, int], torch.Tensor]:
    """(uint8 batch, epoch) → augmented float batch in [0, 1]: the seed's augmentation by ``backend``, or crop_flip."""
    if policy == "crop_flip":
        if backend != "tensor":
            raise ConfigError(
                f"--data.augment_backend {backend} applies to the seed's augmentation only; crop_flip has its own "
                "(tensor) code: leave --data.augment_backend at tensor"
            )
        return crop_flip_augment
    if backend == "kornia":
        seed = kornia_seed_augmentation()
    elif backend == "torchvision":
        seed = torchvision_seed_augmentation()
    else:
        seed = seed_augment
    return lambda images, epoch: seed(images)  # the same distribution every epoch
