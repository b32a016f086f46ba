import math

import pytest
import torch

from lit_cifar.augment import normalize, seed_augment, seed_sampling_maps, training_augmentation, warp


def test_augmentation_keeps_shape_and_gives_floats_in_unit_range():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = seed_augment(images)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


def test_each_image_gets_its_own_parameters():
    torch.manual_seed(0)
    one = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    out = seed_augment(one.expand(64, -1, -1, -1))
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) == 64


def test_parameters_follow_the_seed_distributions():
    torch.manual_seed(0)
    maps = torch.linalg.inv(seed_sampling_maps(20_000))  # the forward maps, input to output
    det = torch.linalg.det(maps)  # flip·rotation·shear have |det| 1: |det| = scale²
    scale = det.abs().sqrt()
    assert 0.8 <= scale.min() and scale.max() <= 1.2
    assert math.isclose((det < 0).float().mean().item(), 0.5, abs_tol=0.02)  # flipped half the time
    # Undo the scale and read the rotation off the second row, which shear and flip leave alone.
    unscaled = maps / scale[:, None, None]
    angle = torch.rad2deg(torch.atan2(unscaled[:, 1, 0], unscaled[:, 1, 1])).abs()
    assert angle.max() <= 10 + 1e-3 and angle.max() > 9.9


def test_identity_and_flip_maps_are_exact():
    images = torch.rand(4, 3, 32, 32)
    identity = torch.eye(2).expand(4, 2, 2)
    flip = torch.tensor([[-1.0, 0.0], [0.0, 1.0]]).expand(4, 2, 2)
    assert torch.equal(warp(images, identity), images)
    assert torch.equal(warp(images, flip), images.flip(-1))


def test_evaluation_only_normalizes_and_is_deterministic():
    images = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    out = normalize(images)
    assert torch.equal(out, normalize(images))
    assert out[0, :, 0, 0].tolist() == [-1.0, 1.0, -0.6000000238418579]


@pytest.mark.parametrize("backend", ["tensor", "kornia", "torchvision"])
def test_every_backend_gives_per_image_augmentation_in_unit_range(backend):
    torch.manual_seed(0)
    one = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    out = training_augmentation("seed", backend)(one.expand(16, -1, -1, -1).contiguous(), 0)
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert len({tuple(o.flatten().tolist()) for o in out}) == 16
