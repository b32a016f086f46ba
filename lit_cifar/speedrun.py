"""The speedrun's training tricks, taken from airbench94 (Keller Jordan, 2024), each in one place.

``Whitening`` and ``Lookahead`` are Lightning callbacks that ``CIFARClassifier.configure_callbacks``
attaches when its hyperparameters ask for them (``--model.network airbench``, ``--model.lookahead
true``), so the command line and the configs name them as model settings. ``norm_bias_optimizer``
builds the optimizer with the BatchNorm biases in a group of their own (``--model.norm_bias_lr_scale``).
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from lit_cifar.errors import ConfigError

WHITENING_IMAGES = 5000  # training images whose 2x2 patches set the whitening layer, as airbench does
LOOKAHEAD_EVERY = 5  # optimizer steps between lookahead updates
LOOKAHEAD_DECAY = 0.95**5  # the weight the average keeps at the end of the run, rising from 0 as (step/total)³


class Whitening(Callback):
    """AirbenchNet's first layer: its filters set from the training images when fitting starts, its bias
    trained for the first ``bias_epochs`` epochs only.

    The filters are set in ``setup``, before Lightning restores a checkpoint, so a resumed run goes on
    with the filters it was trained with. The bias is frozen for autograd on one process, so the backward
    pass skips the gradient of the first conv group's input; under DDP, which expects the same parameters
    to get gradients every step, its gradient is dropped instead.
    """

    def __init__(self, bias_epochs: int = 3, images: int = WHITENING_IMAGES) -> None:
        self.bias_epochs, self.images = bias_epochs, images

    def setup(self, trainer: Trainer, module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not hasattr(trainer.datamodule, "train_images"):
            raise ConfigError(
                "--model.network airbench sets its first layer from the training images: fit it with "
                "lit_cifar's CIFAR10DataModule, or a datamodule with its train_images(count) method"
            )
        module.network.init_whitening(trainer.datamodule.train_images(self.images))

    def on_train_epoch_start(self, trainer: Trainer, module: LightningModule) -> None:
        if trainer.world_size == 1:
            module.network.whiten.bias.requires_grad_(trainer.current_epoch < self.bias_epochs)

    def on_after_backward(self, trainer: Trainer, module: LightningModule) -> None:
        if trainer.world_size > 1 and trainer.current_epoch >= self.bias_epochs:
            module.network.whiten.bias.grad = None


class Lookahead(Callback):
    """airbench's weight averaging: every ``every`` optimizer steps, the network's weights and BatchNorm
    statistics are replaced by an exponential moving average of themselves, whose memory grows from 0 to
    ``decay`` as (step / total steps)³; the last step puts the average in place, and the run ends on it.

    Unlike Lightning's ``WeightAveraging``, which keeps the average apart for evaluation, the average is
    written back into the weights that go on training. It is saved in each checkpoint as
    ``lookahead_average``. Lightning runs ModelCheckpoint after every other callback, so a checkpoint
    written at a step holds that step's update.
    """

    def __init__(self, every: int = LOOKAHEAD_EVERY, decay: float = LOOKAHEAD_DECAY) -> None:
        self.every, self.decay = every, decay
        self.average: list[torch.Tensor] | None = None
        self.total_steps = 0

    def on_train_start(self, trainer: Trainer, module: LightningModule) -> None:
        tensors = averaged_tensors(module.network)
        if self.average is None:
            self.average = [t.detach().clone() for t in tensors]
        else:  # restored from a checkpoint, maybe onto another device
            self.average = [a.to(t.device) for a, t in zip(self.average, tensors)]
        self.total_steps = trainer.estimated_stepping_batches

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, outputs, batch, batch_idx: int) -> None:
        step, total = trainer.global_step, self.total_steps
        if step % self.every and step < total:
            return
        decay = 1.0 if step >= total else self.decay * (step / total) ** 3
        with torch.no_grad():
            for average, current in zip(self.average, averaged_tensors(module.network)):
                average.lerp_(current, 1 - decay)
                current.copy_(average)

    def on_save_checkpoint(self, trainer: Trainer, module: LightningModule, checkpoint: dict) -> None:
        if self.average is not None:
            checkpoint["lookahead_average"] = self.average

    def on_load_checkpoint(self, trainer: Trainer, module: LightningModule, checkpoint: dict) -> None:
        self.average = checkpoint.get("lookahead_average")


def averaged_tensors(network: nn.Module) -> list[torch.Tensor]:
    """Weights and BatchNorm statistics: every floating-point tensor of the network's state."""
    return [t for t in network.state_dict().values() if t.is_floating_point()]


def norm_bias_optimizer(optimizer: OptimizerCallable, network: nn.Module, norm_bias_lr_scale: float) -> torch.optim.Optimizer:
    """The optimizer over the network's trained parameters; with ``norm_bias_lr_scale`` ≠ 1, the BatchNorm
    parameters in a second group whose learning rate is that many times the others' and whose weight decay
    is divided by it, so the decay per step stays the same (airbench trains its BatchNorm biases at 64x)."""
    norms = {id(p) for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    trained = [p for p in network.parameters() if p.requires_grad]
    if norm_bias_lr_scale == 1 or not norms:
        return optimizer([{"params": trained}])
    built = optimizer([
        {"params": [p for p in trained if id(p) not in norms]},
        {"params": [p for p in trained if id(p) in norms]},
    ])
    norm_group = built.param_groups[1]
    norm_group["lr"] *= norm_bias_lr_scale
    norm_group["weight_decay"] = norm_group.get("weight_decay", 0.0) / norm_bias_lr_scale
    return built
