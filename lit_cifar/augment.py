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
  optional dependency; measured 4-7x slower than ``tensor`` on the CPU (docs/benchmarks.md);
- ``torchvision``: the seed's own torchvision transforms, image by image, on uint8 tensors:
  exact fidelity to the seed, and the slowest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from lit_cifar.errors import ConfigError

AugmentBackend = Literal["tensor", "kornia", "torchvision"]
MAX_ROTATION = 10.0  # degrees
MAX_SHEAR = 10.0  # degrees, parallel to the x axis
SCALE = (0.8, 1.2)

MEAN = 0.5
STD = 0.5


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] (or floats in [0, 1]) to floats with the seed's mean 0.5 and std 0.5."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255)
    return (images - MEAN) / STD


def seed_affine_matrices(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Per-image forward maps (n, 2, 2) in centred coordinates: scale·shear · rotation · flip."""
    draw = lambda: torch.rand(n, device=device)  # noqa: E731
    flip = torch.where(draw() < 0.5, -1.0, 1.0)
    angle = torch.deg2rad((draw() * 2 - 1) * MAX_ROTATION)
    shear = torch.tan(torch.deg2rad((draw() * 2 - 1) * MAX_SHEAR))
    zoom = SCALE[0] + (SCALE[1] - SCALE[0]) * draw()
    cos, sin, zero, one = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    flip_m = torch.stack([torch.stack([flip, zero], -1), torch.stack([zero, one], -1)], -2)
    rotate_m = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shear_m = torch.stack([torch.stack([one, shear], -1), torch.stack([zero, one], -1)], -2)
    return zoom[:, None, None] * shear_m @ rotate_m @ flip_m


def warp(images: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Apply centred linear maps (n, 2, 2) to float images (n, c, h, w), nearest sampling, black outside.

    ``grid_sample`` asks, for every output pixel, where to read in the input: the inverse map.
    """
    inverse = torch.linalg.inv(forward)
    theta = torch.cat([inverse, inverse.new_zeros(len(inverse), 2, 1)], dim=2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def seed_augment(images: torch.Tensor) -> torch.Tensor:
    """uint8 batch (n, 3, h, w) → augmented float batch in [0, 1], new random parameters per image."""
    pixels = images.float().div_(255)
    return warp(pixels, seed_affine_matrices(len(images), device=images.device))


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


def seed_augmentation(backend: AugmentBackend) -> Callable[[torch.Tensor], torch.Tensor]:
    """The seed's augmentation, uint8 batch → float batch in [0, 1], by the chosen backend."""
    if backend == "kornia":
        return kornia_seed_augmentation()
    if backend == "torchvision":
        return torchvision_seed_augmentation()
    return seed_augment
