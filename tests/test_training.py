"""Every backend and speed option trains on the CPU: right shapes, finite loss, loss going down."""

import pytest
import torch
from lightning.pytorch import Callback

from lit_cifar.cli import CifarCLI, main


class LossHistory(Callback):
    """Reads each epoch's Loss/train, which the module logs after callbacks' own on_train_epoch_end."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch > 0:
            self.losses.append(float(trainer.callback_metrics["Loss/train"]))

    def on_train_end(self, trainer, module) -> None:
        self.losses.append(float(trainer.callback_metrics["Loss/train"]))


def overfit(data_dir, *args: str) -> list[float]:
    """Train 12 epochs on one batch of 16 images and return the training loss per epoch."""
    cli = CifarCLI(
        args=[
            "--data.data_dir", str(data_dir), "--data.val_size", "10", "--data.batch_size", "16",
            "--trainer.overfit_batches", "1", "--max_epochs", "12", "--trainer.logger", "false",
            "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "0", *args,
        ],
        run=False,
    )
    history = LossHistory()
    cli.trainer.callbacks.append(history)
    cli.trainer.fit(cli.model, cli.datamodule)
    return history.losses


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--precision", "bf16-mixed"],
        ["--model.channels_last", "false"],
        ["--data.augment", "false"],
        ["--data.augment_backend", "kornia"],
        ["--data.augment_backend", "torchvision"],
        ["--model.regularization", "elastic_net", "--model.dropout", "0.2", "--model.label_smoothing", "0.1"],
        ["--model.scheduler", "OneCycleLR", "--model.scheduler.max_lr", "0.004"],
        ["--model.compile_mode", "default"],
    ],
    ids=lambda args: " ".join(args) or "defaults",
)
def test_option_trains_and_loss_goes_down(learnable_data_dir, args):
    losses = overfit(learnable_data_dir, *args)
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.75 * losses[0], losses


def test_one_cycle_gets_the_runs_length_and_steps_per_batch(python_data_dir):
    cli = CifarCLI(
        args=["--data.data_dir", str(python_data_dir), "--data.val_size", "10", "--data.batch_size", "10",
              "--max_epochs", "3", "--model.scheduler", "OneCycleLR", "--model.scheduler.max_lr", "0.01"],
        run=False,
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    (config,) = cli.trainer.lr_scheduler_configs
    assert config.interval == "step" and config.scheduler.total_steps == 15  # 5 batches of 10, 3 epochs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.compile_mode", "reduce-overhead"], "reduce-overhead uses CUDA graphs and needs a GPU"),
        (["--model.cuda_graph", "true"], "--model.cuda_graph needs a GPU (--accelerator gpu): drop it on the CPU"),
        (["--data.augment_cuda_graph", "true"], "--data.augment_cuda_graph needs a GPU (--accelerator gpu): drop it on the CPU"),
        (["--data.augment_cuda_graph", "true", "--data.augment_backend", "kornia"], "--data.augment_backend kornia does not do"),
        (["--precision", "16-mixed"], "--precision 16-mixed needs a GPU; on the CPU use --precision bf16-mixed"),
    ],
)
def test_gpu_only_options_are_refused_on_the_cpu(python_data_dir, args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main("fit", ["--data.data_dir", str(python_data_dir), "--data.val_size", "10", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_train_per_class_trains_on_exactly_that_many_images(python_data_dir):
    seen = []

    class CountImages(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            seen.append(len(batch[1]))

    cli = CifarCLI(
        args=["--data.data_dir", str(python_data_dir), "--data.val_size", "10", "--data.batch_size", "8",
              "--data.train_per_class", "3", "--max_epochs", "1", "--trainer.logger", "false"],
        run=False,
    )
    cli.trainer.callbacks.append(CountImages())
    cli.trainer.fit(cli.model, cli.datamodule)
    assert sum(seen) == 30 and cli.trainer.num_training_batches == 4
