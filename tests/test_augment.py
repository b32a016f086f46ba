import math

from types import SimpleNamespace

import pytest
import torch

from lit_cifar.data import CIFAR10DataModule
from lit_cifar.errors import ConfigError
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
    # Undo the scale: shear · rotation · flip. The second row is the rotation's (the shear leaves it alone).
    unscaled = maps / scale[:, None, None]
    radians = torch.atan2(unscaled[:, 1, 0], unscaled[:, 1, 1])
    angle = torch.rad2deg(radians).abs()
    assert angle.max() <= 10 + 1e-3 and angle.max() > 9.9
    # Undo the flip and the rotation: what is left is the x-shear [[1, tan s], [0, 1]].
    mirrored = torch.where(det < 0, -1.0, 1.0)
    flip = torch.diag_embed(torch.stack([mirrored, torch.ones_like(det)], -1))
    cos, sin = (radians * mirrored).cos(), (radians * mirrored).sin()  # the flip mirrored the angle read above
    unrotate = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # rotation by -angle
    shear = unscaled @ flip @ unrotate
    torch.testing.assert_close(shear[:, 1], torch.tensor([0.0, 1.0]).expand(len(shear), 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(shear[:, 0, 0], torch.ones(len(shear)), atol=1e-5, rtol=0)
    shear_degrees = torch.rad2deg(torch.atan(shear[:, 0, 1]))
    assert shear_degrees.abs().max() <= 10 + 1e-3 and shear_degrees.min() < -9.9 and shear_degrees.max() > 9.9
    assert math.isclose(shear_degrees.abs().mean().item(), 5.0, abs_tol=0.2)  # uniform in ±10°
    assert math.isclose(scale.mean().item(), 1.0, abs_tol=0.01) and scale.min() < 0.81 and scale.max() > 1.19


def test_identity_and_flip_maps_are_exact():
    images = torch.rand(4, 3, 32, 32)
    identity = torch.eye(2).expand(4, 2, 2)
    flip = torch.tensor([[-1.0, 0.0], [0.0, 1.0]]).expand(4, 2, 2)
    assert torch.equal(warp(images, identity), images)
    assert torch.equal(warp(images, flip), images.flip(-1))


def test_a_quarter_turn_map_turns_the_images():
    """A map that is not its own transpose: an (x, y) mix-up in building the grid turns them the other way."""
    images = torch.rand(4, 3, 32, 32)
    quarter_turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]]).expand(4, 2, 2)
    assert torch.equal(warp(images, quarter_turn), torch.rot90(images, 1, (-2, -1)))


def test_normalization_maps_pixels_to_the_seeds_range():
    images = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert normalize(images)[0, :, 0, 0].tolist() == [-1.0, 1.0, -0.6000000238418579]


@pytest.mark.parametrize("stage", ["validating", "testing", "training"])
def test_only_training_batches_are_augmented(stage):
    torch.manual_seed(0)
    data = CIFAR10DataModule(download=False)
    data.trainer = SimpleNamespace(training=stage == "training", current_epoch=0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(8)
    batches = [data.on_after_batch_transfer((images, labels), 0) for _ in range(2)]
    for out, out_labels in batches:
        assert torch.equal(out_labels, labels)
        assert torch.equal(out, normalize(images)) == (stage != "training")
    assert torch.equal(batches[0][0], batches[1][0]) == (stage != "training")  # new draws every training batch


@pytest.mark.parametrize("augment", [False, True])
def test_train_sizes_resize_the_training_batches_of_their_epochs_only(augment):
    torch.manual_seed(0)
    data = CIFAR10DataModule(download=False, augment=augment, augmentation="crop_flip", train_sizes=[24, 16])
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    sides = {}
    for epoch, training in [(0, True), (1, True), (2, True), (0, False)]:
        data.trainer = SimpleNamespace(training=training, current_epoch=epoch)
        out, _ = data.on_after_batch_transfer((images, torch.arange(8)), 0)
        sides[epoch, training] = out.shape[2:]
    assert sides == {(0, True): (24, 24), (1, True): (16, 16), (2, True): (32, 32), (0, False): (32, 32)}
    if not augment:  # the images themselves, scaled down (bilinear, antialiased) and normalised
        data.trainer = SimpleNamespace(training=True, current_epoch=0)
        resized = torch.nn.functional.interpolate(images.float() / 255, size=(24, 24), mode="bilinear", antialias=True)
        torch.testing.assert_close(data.on_after_batch_transfer((images, torch.arange(8)), 0)[0], normalize(resized))


def test_a_train_size_below_one_pixel_names_the_flag():
    with pytest.raises(ConfigError, match=r"--data.train_sizes \[24, 0\]: every size must be at least 1 pixel"):
        CIFAR10DataModule(train_sizes=[24, 0])


@pytest.mark.parametrize("backend", ["tensor", "kornia", "torchvision"])
def test_every_backend_gives_per_image_augmentation_in_unit_range(backend):
    torch.manual_seed(0)
    one = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    out = training_augmentation("seed", backend)(one.expand(16, -1, -1, -1).contiguous(), 0)
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert len({tuple(o.flatten().tolist()) for o in out}) == 16
