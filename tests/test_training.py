"""Every backend and speed option takes effect and trains on the CPU: finite loss, loss going down."""

import pytest
import torch
from lightning.pytorch import Callback

from conftest import LossHistory
from lit_cifar.cli import CifarCLI, main


class Probe(Callback):
    """What each training step was given and did: its input batch, the layout the first convolution saw,
    the logits' dtype, and the learning rate."""

    def __init__(self) -> None:
        self.batches, self.layouts, self.dtypes, self.rates = [], [], [], []

    def on_train_start(self, trainer, module) -> None:
        network = module.network
        network.conv1.register_forward_pre_hook(
            lambda _, args: self.layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        network.fc2.register_forward_hook(lambda _, args, out: self.dtypes.append(out.dtype))

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.batches.append(batch[0].clone())
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def overfit(data_dir, *args: str) -> tuple[list[float], Probe, CifarCLI]:
    """Train 12 epochs on one batch of 16 images: the training loss per epoch, the probe, the CLI."""
    cli = CifarCLI(
        args=[
            "--data.data_dir", str(data_dir), "--data.val_size", "10", "--data.batch_size", "16",
            "--trainer.overfit_batches", "1", "--max_epochs", "12", "--trainer.logger", "false",
            "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "0", *args,
        ],
        run=False,
    )
    history, probe = LossHistory(), Probe()
    cli.trainer.callbacks.extend([history, probe])
    cli.trainer.fit(cli.model, cli.datamodule)
    return history.losses, probe, cli


def augmented_differently_each_epoch(probe: Probe) -> bool:
    return not any(torch.equal(probe.batches[0], batch) for batch in probe.batches[1:])


# Each option, and what shows that it took effect (calls: how often the kornia and torchvision pipelines ran).
OPTIONS = {
    "defaults": ([], lambda probe, cli, calls: all(probe.layouts) and set(probe.dtypes) == {torch.float32}
                 and augmented_differently_each_epoch(probe) and set(probe.rates) == {1e-3} and calls == {}),
    "bf16-mixed": (["--precision", "bf16-mixed"], lambda probe, cli, calls: set(probe.dtypes) == {torch.bfloat16}),
    "channels_last false": (["--model.channels_last", "false"], lambda probe, cli, calls: not any(probe.layouts)),
    "augment false": (["--data.augment", "false"],
                      lambda probe, cli, calls: all(torch.equal(probe.batches[0], b) for b in probe.batches)),
    "kornia": (["--data.augment_backend", "kornia"],
               lambda probe, cli, calls: calls == {"kornia": 12} and augmented_differently_each_epoch(probe)),
    "torchvision": (["--data.augment_backend", "torchvision"],
                    lambda probe, cli, calls: calls == {"torchvision": 12 * 16} and augmented_differently_each_epoch(probe)),
    "elastic_net dropout label_smoothing": (
        ["--model.regularization", "elastic_net", "--model.dropout", "0.2", "--model.label_smoothing", "0.1"],
        lambda probe, cli, calls: cli.trainer.callback_metrics["Penalty/train"] > 0
        and cli.model.network.dropout.p == 0.2 and cli.model.label_smoothing == 0.1),
    "OneCycleLR": (["--model.scheduler", "OneCycleLR", "--model.scheduler.max_lr", "0.004"],
                   lambda probe, cli, calls: len(set(probe.rates)) == 12 and max(probe.rates) == pytest.approx(0.004, rel=0.05)),
    "compile": (["--model.compile_mode", "default"],
                lambda probe, cli, calls: cli.model.network._compiled_call_impl is not None),
}


@pytest.fixture
def pipeline_calls(monkeypatch) -> dict[str, int]:
    """How often kornia's augmentation pipeline and torchvision's per-image transform ran."""
    import kornia.augmentation
    from torchvision.transforms import v2

    calls: dict[str, int] = {}
    for name, cls in (("kornia", kornia.augmentation.AugmentationSequential), ("torchvision", v2.Compose)):
        def counted(self, *args, _forward=cls.forward, _name=name, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _forward(self, *args, **kwargs)

        monkeypatch.setattr(cls, "forward", counted)
    return calls


@pytest.mark.parametrize("option", OPTIONS)
def test_option_takes_effect_trains_and_loss_goes_down(learnable_data_dir, option, pipeline_calls):
    args, took_effect = OPTIONS[option]
    losses, probe, cli = overfit(learnable_data_dir, *args)
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.75 * losses[0], losses
    assert took_effect(probe, cli, pipeline_calls)


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
        (["--precision", "16-mixed"], "--precision 16-mixed needs a GPU; on the CPU use --precision "),
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
