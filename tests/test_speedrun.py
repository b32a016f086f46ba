"""The speedrun's parts: airbench's network, its whitening, crop-and-flip, the schedule, the optimizer
groups, lookahead, test-time augmentation, and the recipe itself through scripts/fit.py and scripts/test.py.
Muon's own step: tests/test_muon.py."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from torch import nn

from conftest import ROOT, fit_in_subprocess, recorded_steps, whole_and_killed_runs
from lit_cifar.augment import crop_flip_augment, normalize
from lit_cifar.cli import CifarCLI, main
from lit_cifar.data import CIFAR10DataModule
from lit_cifar.module import CIFARClassifier
from lit_cifar.networks import AirbenchNet
from lit_cifar.schedules import TriangularLR
from lit_cifar.speedrun import Lookahead
from lit_cifar.tta import tta_logits

SPEEDRUN = ROOT / "configs" / "speedrun.yaml"


def test_airbench_net_gives_ten_logits_with_airbench_size():
    net = AirbenchNet()
    assert net(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    assert net(torch.randn(4, 3, 24, 24)).shape == (4, 10)  # any size: the speedrun's first epochs are 24×24
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


def reflected_shift(images: torch.Tensor, step: int) -> torch.Tensor:
    """Every pixel (i, j) taken from (i + step, j + step), indices past an edge mirrored back (edge not repeated)."""
    size = images.shape[-1]
    index = torch.arange(size) + step
    index = torch.where(index < 0, -index, torch.where(index >= size, 2 * (size - 1) - index, index))
    return images[..., index, :][..., index]


@pytest.mark.parametrize("mode", ["none", "flip", "flip_translate"])
def test_test_time_augmentation_averages_the_logits_of_the_copies_it_names(mode):
    torch.manual_seed(0)
    weights = torch.randn(5, 3, 32, 32)

    def forward(images):  # sees where each pixel is, so every copy gets logits of its own
        return torch.einsum("nchw,kchw->nk", images, weights)

    images = torch.randn(4, 3, 32, 32)
    plain, mirror = forward(images), forward(images.flip(-1))
    up_left, down_right = reflected_shift(images, -1), reflected_shift(images, 1)
    shifted = [(forward(s) + forward(s.flip(-1))) / 2 for s in (up_left, down_right)]
    expected = {
        "none": plain,
        "flip": (plain + mirror) / 2,
        "flip_translate": ((plain + mirror) / 2 + (shifted[0] + shifted[1]) / 2) / 2,
    }[mode]
    torch.testing.assert_close(tta_logits(forward, images, mode), expected, atol=1e-4, rtol=1e-5)
    assert not torch.allclose(expected, plain) or mode == "none"


def test_lookahead_replaces_the_weights_by_their_average_every_fifth_step_and_ends_on_it():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    module, trainer = SimpleNamespace(network=network), SimpleNamespace(global_step=0, estimated_stepping_batches=12)
    lookahead = Lookahead(every=5, decay=0.8)
    lookahead.on_train_start(trainer, module)
    tensors = [t for t in network.state_dict().values() if t.is_floating_point()]
    average = [t.clone() for t in tensors]
    for step in range(1, 13):
        with torch.no_grad():  # what an optimizer step and BatchNorm would do to the state
            for t in tensors:
                t.add_(torch.randn_like(t))
        before = [t.clone() for t in tensors]
        trainer.global_step = step
        lookahead.on_train_batch_end(trainer, module, None, None, step - 1)
        if step % 5 and step < 12:
            assert all(torch.equal(t, b) for t, b in zip(tensors, before)), step  # untouched between updates
            continue
        decay = 1.0 if step == 12 else 0.8 * (step / 12) ** 3
        average = [a * decay + b * (1 - decay) for a, b in zip(average, before)]
        for t, a in zip(tensors, average):
            torch.testing.assert_close(t, a)
    checkpoint = {}
    lookahead.on_save_checkpoint(trainer, module, checkpoint)
    for saved, t in zip(checkpoint["lookahead_average"], tensors):
        assert torch.equal(saved, t)  # the run ends on the average, and the checkpoint holds it


def test_whitening_is_set_from_the_training_images_and_its_bias_trains_for_its_epochs_only(learnable_data_dir):
    biases = {}

    class WhiteningBias(Callback):
        def on_train_epoch_end(self, trainer, module) -> None:
            biases[trainer.current_epoch] = module.network.whiten.bias.detach().clone()

    cli = CifarCLI(
        args=["--config", str(SPEEDRUN), "--data.data_dir", str(learnable_data_dir), "--data.batch_size", "16",
              "--trainer.max_steps", "-1", "--max_epochs", "3", "--model.whitening_bias_epochs", "1",
              "--model.tta", "none", "--model.lookahead", "false", "--trainer.logger", "false",
              "--trainer.enable_checkpointing", "false",
              "--trainer.enable_progress_bar", "false"],
        run=False,
    )
    cli.trainer.callbacks.append(WhiteningBias())
    expected = AirbenchNet()
    cli.trainer.fit(cli.model, cli.datamodule)
    expected.init_whitening(cli.datamodule.train_images(5000))
    assert torch.equal(cli.model.network.whiten.weight, expected.whiten.weight)  # set from the data, never trained
    assert not torch.equal(biases[0], torch.zeros_like(biases[0]))  # trained in epoch 0
    assert torch.equal(biases[0], biases[1]) and torch.equal(biases[1], biases[2])  # frozen after


def test_a_killed_speedrun_resumed_mid_epoch_ends_as_an_uninterrupted_one(learnable_data_dir, tmp_path):
    """The speedrun with lookahead added: its updates at steps 5, 10, 15 and 20, checkpoints written at the same
    steps, and the run killed at step 12: the resumed run must start from step 10's update (Muon's and SGD's
    momentum too), and at the batch after it, although the TriangularLR schedule asks the Trainer for its
    step count before the checkpoint is restored."""
    run = ["--config", str(SPEEDRUN), "--data.val_size", "0", "--data.batch_size", "16", "--trainer.max_steps", "20",
           "--model.tta", "none", "--model.lookahead", "true",
           "--checkpoint.every_n_train_steps", "5"]  # 60 images: 4 steps per epoch
    whole_and_killed_runs(learnable_data_dir, tmp_path, run, kill_at_step=12)
    resumed = fit_in_subprocess(learnable_data_dir, tmp_path / "crash", *run, "--ckpt_path", "last",
                                "--trainer.callbacks+=crash_callbacks.RecordSteps")
    assert resumed.returncode == 0, resumed.stderr
    steps = recorded_steps(tmp_path / "crash" / "steps.json")
    assert steps["started_at"] == 10 and steps["trained"] == list(range(11, 21))

    expected = torch.load(tmp_path / "whole/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    got = torch.load(tmp_path / "crash/lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert got["global_step"] == expected["global_step"] == 20
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][name], tensor), name  # bit for bit, on the CPU
    for average, tensor in zip(got["lookahead_average"], expected["lookahead_average"], strict=True):
        assert torch.equal(average, tensor)


def test_speedrun_recipe_fits_through_the_script_and_tests_with_the_checkpoints_settings(
    learnable_data_dir, capsys, monkeypatch
):
    main("fit", ["--config", str(SPEEDRUN), "--data.data_dir", str(learnable_data_dir), "--data.batch_size", "16",
                 "--trainer.max_steps", "6", "--trainer.enable_progress_bar", "false"])
    checkpoints = Path("lightning_logs/version_0/checkpoints")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch01.ckpt", "last.ckpt"]  # no validation: no "best"
    checkpoint = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 6
    # Muon trained the convolution filters (the last group), Nesterov SGD the rest, with the BatchNorm biases at 64x.
    rest, norms, filters = checkpoint["optimizer_states"][0]["param_groups"]
    assert (rest["muon"], norms["muon"], filters["muon"]) == (False, False, True)
    assert norms["initial_lr"] == pytest.approx(64 * rest["initial_lr"]) and filters["initial_lr"] == 0.24
    assert "lookahead_average" not in checkpoint

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
    logged = logged_test_accuracies(capsys.readouterr().out)

    # The same accuracies by hand, plain and with flip_translate, on the test images.
    model = CIFARClassifier.load_from_checkpoint(checkpoints / "last.ckpt", weights_only=False).eval()
    data = CIFAR10DataModule(data_dir=str(learnable_data_dir), val_size=0, download=False)
    data.setup("test")
    images, labels = data.splits["test"]
    with torch.no_grad():
        inputs = normalize(images, "cifar10")
        plain = (model(inputs).argmax(1) == labels).float().mean().item()
        augmented = (tta_logits(model, inputs, "flip_translate").argmax(1) == labels).float().mean().item()
    assert logged == pytest.approx({"Accuracy/test": plain, "Accuracy/test_tta": augmented}, abs=1e-6)


def logged_test_accuracies(out: str) -> dict[str, float]:
    """Accuracy/test and Accuracy/test_tta from the table Lightning prints after a test run."""
    values = {}
    for line in out.splitlines():
        cells = line.replace("│", " ").split()
        if len(cells) == 2 and cells[0] in ("Accuracy/test", "Accuracy/test_tta"):
            values[cells[0]] = float(cells[1])
    return values


def test_test_time_augmentation_is_an_option_of_evaluation_too(learnable_data_dir, capsys):
    tiny = ["--data.data_dir", str(learnable_data_dir), "--data.val_size", "10", "--trainer.enable_progress_bar", "false"]
    main("fit", [*tiny, "--data.batch_size", "16", "--max_epochs", "1"])  # the seed's recipe: no tta
    capsys.readouterr()
    main("test", [*tiny, "--ckpt_path", "lightning_logs/version_0/checkpoints/last.ckpt", "--model.tta", "flip"])
    assert set(logged_test_accuracies(capsys.readouterr().out)) == {"Accuracy/test", "Accuracy/test_tta"}
