"""Stopping a run whose training loss became NaN or infinite, before a checkpoint keeps its weights."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_cifar.errors import UserError


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(Callback):
    """Stops the run with a clear message when the training loss becomes NaN or infinite.

    Each step only keeps its loss tensor: no tensor operation and no wait for the device per step.
    The kept losses are read every ``check_every_n_steps`` steps, at the end of every epoch, and
    before every checkpoint is written, so a checkpoint never holds the weights of a diverged run:
    the last one written before it is kept.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self.losses: list[torch.Tensor] = []  # on the training device, unread
        self.steps: list[int] = []  # the global step of each

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, outputs, batch, batch_idx: int) -> None:
        self.losses.append(outputs["loss"].detach())
        self.steps.append(trainer.global_step)
        if len(self.steps) == self.check_every_n_steps:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        self.check(trainer)

    def on_save_checkpoint(self, trainer: Trainer, module: LightningModule, checkpoint: dict) -> None:
        self.check(trainer)

    def check(self, trainer: Trainer) -> None:
        if not self.steps:
            return
        losses, steps = torch.stack(self.losses), self.steps
        self.losses, self.steps = [], []
        non_finite = (~torch.isfinite(losses)).nonzero()
        if not len(non_finite):
            return
        first = int(non_finite[0])
        written = sorted((str(Path(path)) for c in trainer.checkpoint_callbacks for path in (c.last_model_path, c.best_model_path)
                          if path), key=lambda path: not path.endswith("last.ckpt"))  # last.ckpt first, if written
        then = (f"lower it and resume with --ckpt_path {written[0]}, written before the loss diverged" if written else
                "lower it and start again: no checkpoint was written before the loss diverged")
        raise NonFiniteLossError(
            f"the training loss became {float(losses[first])} at step {steps[first]}, so training stopped. The usual "
            "cause is a learning rate that is too high (--model.optimizer.lr, or max_lr of a schedule) or a penalty "
            f"that is too strong (--model.reg_lambda); {then}"
        )
