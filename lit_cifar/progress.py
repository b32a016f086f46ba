"""Progress for a log file: one line per epoch when the output is not a terminal."""

from __future__ import annotations

import sys
import time

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar

# What each line shows, in this order, when the run logs it.
SHOWN = ("Loss/train", "Accuracy/train", "Loss/val", "Accuracy/val", "Accuracy/val_tta")


class EpochLines(ProgressBar):
    """Lightning's progress bar redraws itself with a carriage return every few steps: in a terminal a bar,
    in a file or a CI log thousands of partial lines. This writes one line per finished epoch instead::

        epoch 3/20  Loss/train 1.2345  Accuracy/train 0.5512  Loss/val 1.1876  Accuracy/val 0.5830  (9.4 s)

    The command line uses it whenever standard output is not a terminal.
    """

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.epoch: int | None = None  # the epoch whose line is still to be written
        self.epoch_started = 0.0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_epoch_start(self, trainer: Trainer, module: LightningModule) -> None:
        # The module logs its training metrics after every callback's on_train_epoch_end, so the line
        # for an epoch is written when the next one starts, or when training ends.
        self._write_finished_epoch(trainer)
        self.epoch_started = time.perf_counter()
        self.epoch = trainer.current_epoch

    def on_train_end(self, trainer: Trainer, module: LightningModule) -> None:
        self._write_finished_epoch(trainer)

    def _write_finished_epoch(self, trainer: Trainer) -> None:
        epoch = self.epoch
        if epoch is None or not self.enabled or not trainer.is_global_zero:
            return
        self.epoch = None
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        if trainer.max_steps > 0:  # a run measured in steps (the speedrun) may end before its last epoch
            total += f" (step {trainer.global_step}/{trainer.max_steps})"
        metrics = trainer.callback_metrics
        values = "  ".join(f"{name} {float(metrics[name]):.4f}" for name in SHOWN if name in metrics)
        print(f"epoch {epoch + 1}{total}  {values}  ({time.perf_counter() - self.epoch_started:.1f} s)", file=sys.stdout, flush=True)
