"""Callbacks that break a run on purpose, for the crash tests (loaded by class path in a subprocess)."""

import os
import signal

import torch
from lightning.pytorch import Callback


class KillAtStep(Callback):
    """SIGKILL the process after the given optimizer step: no clean-up, no checkpoint, as a crash."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class PoisonAtStep(Callback):
    """Set a weight to NaN after the given optimizer step, so the following loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                module.network.fc2.weight[0, 0] = float("nan")
