"""The speedrun's parts: airbench's network, its whitening, crop-and-flip, the schedule, the optimizer
groups, lookahead, test-time augmentation, and the recipe itself through scripts/fit.py and scripts/test.py."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lit_cifar.augment import crop_flip_augment
from lit_cifar.cli import main
from lit_cifar.data import CIFAR10DataModule
from lit_cifar.module import CIFARClassifier
from lit_cifar.networks import AirbenchNet
from lit_cifar.schedules import TriangularLR

SPEEDRUN = Path(__file__).resolve().parents[1] / "configs" / "speedrun.yaml"


def test_airbench_net_gives_ten_logits_with_airbench_size():
    net = AirbenchNet()
    assert net(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    assert 1.9e6 < sum(p.numel() for p in net.parameters()) < 2.0e6
    assert not net.whiten.weight.requires_grad and net.whiten.bias.requires_grad


def test_whitening_makes_the_patches_uncorrelated_with_unit_variance():
    torch.manual_seed(0)
    smooth = F.interpolate(torch.randn(32, 3, 16, 16), scale_factor=2, mode="bilinear")  # neighbours correlated
    images = smooth + 0.1 * torch.randn(32, 3, 32, 32)
    net = AirbenchNet()
    net.init_whitening(images, eps=0.0)
    whitened = F.conv2d(images, net.whiten.weight[:12]).permute(0, 2, 3, 1).reshape(-1, 12)
    second_moment = whitened.T @ whitened / len(whitened)
    torch.testing.assert_close(second_moment, torch.eye(12), atol=1e-3, rtol=0)
    torch.testing.assert_close(net.whiten.weight[12:], -net.whiten.weight[:12])  # and their negatives


def crop_and_mirror(image: torch.Tensor, source: torch.Tensor) -> tuple[int, int, bool]:
    """Which shift (dy, dx) of ``source`` reflect-padded by 2, mirrored or not, ``image`` is."""
    padded = F.pad(source.float()[None], (2, 2, 2, 2), mode="reflect")[0] / 255
    for dy in range(5):
        for dx in range(5):
            crop = padded[:, dy : dy + 32, dx : dx + 32]
            for mirrored in (False, True):
                if torch.equal(crop.flip(-1) if mirrored else crop, image):
                    return dy, dx, mirrored
    raise AssertionError("not a shifted crop of its source")


def test_crop_flip_shifts_each_image_and_mirrors_it_in_every_other_epoch():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    epochs = [crop_flip_augment(images, epoch) for epoch in range(3)]
    assert epochs[0].shape == images.shape and epochs[0].dtype == torch.float32
    found = [[crop_and_mirror(image, source) for image, source in zip(out, images)] for out in epochs]
    assert len({(dy, dx) for dy, dx, _ in found[0]}) > 15  # shifts drawn per image
    mirrored = torch.tensor([[m for _, _, m in epoch] for epoch in found])
    assert 0.3 < mirrored[0].float().mean() < 0.7  # about half the images in any one epoch
    assert (mirrored[0] != mirrored[1]).all() and (mirrored[0] == mirrored[2]).all()  # and each one every other epoch


def test_triangular_schedule_rises_to_the_peak_then_falls_to_the_end():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    schedule = TriangularLR(optimizer, total_steps=100, start_factor=0.2, peak=0.25, end_factor=0.1)
    rates = []
    for _ in range(101):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.4) and rates[25] == pytest.approx(2.0) and rates[100] == pytest.approx(0.2)
    assert rates.index(max(rates)) == 25


def test_norm_biases_get_their_own_learning_rate_and_the_same_decay_per_step():
    model = CIFARClassifier(
        network="airbench", norm_bias_lr_scale=64.0,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1, weight_decay=0.01),
    )
    others, norms = model.configure_optimizers().param_groups
    assert others["lr"] == pytest.approx(0.1) and norms["lr"] == pytest.approx(6.4)
    assert norms["lr"] * norms["weight_decay"] == pytest.approx(others["lr"] * others["weight_decay"])
    assert len(norms["params"]) == 6  # the six BatchNorms' biases; their scales do not train
    trained = {id(p) for group in (others, norms) for p in group["params"]}
    assert id(model.network.whiten.weight) not in trained


@pytest.mark.parametrize("tta", ["flip", "flip_translate"])
def test_test_time_augmentation_changes_nothing_for_an_invariant_input(tta):
    torch.manual_seed(0)
    model = CIFARClassifier(network="airbench", tta=tta).eval()
    if tta == "flip":  # mirror-symmetric images
        half = torch.randn(4, 3, 32, 16)
        images = torch.cat([half, half.flip(-1)], dim=-1)
    else:  # one colour per image: the same under mirroring and shifting
        images = torch.randn(4, 3, 1, 1).expand(4, 3, 32, 32).contiguous()
    with torch.no_grad():
        torch.testing.assert_close(model.predict_logits(images), model(images).float(), atol=1e-5, rtol=1e-5)


def test_speedrun_recipe_fits_through_the_script_and_tests_with_the_checkpoints_settings(
    learnable_data_dir, capsys, monkeypatch
):
    main("fit", ["--config", str(SPEEDRUN), "--data.data_dir", str(learnable_data_dir), "--data.batch_size", "16",
                 "--trainer.max_steps", "6", "--trainer.enable_progress_bar", "false"])
    checkpoints = Path("lightning_logs/version_0/checkpoints")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch01.ckpt", "last.ckpt"]  # no validation: no "best"
    checkpoint = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 6
    # Lookahead ends the run on the average: the saved weights are the average's.
    floats = [t for t in checkpoint["state_dict"].values() if t.is_floating_point()]
    for average, weight in zip(checkpoint["lookahead_average"], floats):
        torch.testing.assert_close(average, weight, atol=0, rtol=0)

    normalizations = []
    original = CIFAR10DataModule.test_dataloader

    def record(self):
        normalizations.append(self.normalization)
        return original(self)

    monkeypatch.setattr(CIFAR10DataModule, "test_dataloader", record)
    capsys.readouterr()
    # No --config: the model's settings and the data's normalisation come from the checkpoint.
    main("test", ["--data.data_dir", str(learnable_data_dir), "--data.val_size", "0",
                  "--ckpt_path", str(checkpoints / "last.ckpt"), "--trainer.enable_progress_bar", "false"])
    assert normalizations == ["cifar10"]
    out = capsys.readouterr().out
    assert "Accuracy/test_tta" in out and "Accuracy/test " in out


def test_test_time_augmentation_is_an_option_of_evaluation_too(learnable_data_dir, capsys):
    tiny = ["--data.data_dir", str(learnable_data_dir), "--data.val_size", "10", "--trainer.enable_progress_bar", "false"]
    main("fit", [*tiny, "--data.batch_size", "16", "--max_epochs", "1"])  # the seed's recipe: no tta
    capsys.readouterr()
    main("test", [*tiny, "--ckpt_path", "lightning_logs/version_0/checkpoints/last.ckpt", "--model.tta", "flip"])
    out = capsys.readouterr().out
    assert "Accuracy/test_tta" in out and "Accuracy/test " in out
