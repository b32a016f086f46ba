"""Callbacks for the crash and resume tests, loaded by class path in a subprocess: two break a run on purpose,
one records what a run trained."""

import json
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch import Callback


class KillAtStep(Callback):
    """SIGKILL the process after the given optimizer step: no clean-up, no checkpoint, as a crash. Once: the
    resumed run's saved configuration names this callback too, so it leaves ``marker`` behind and then spares runs."""

    def __init__(self, step: int, marker: str = "killed.marker") -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


class PoisonAtStep(Callback):
    """Set a weight to NaN after the given optimizer step, so the following loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                module.network.fc2.weight[0, 0] = float("nan")


class RecordSteps(Callback):
    """Write to ``path`` the global step the run started training at and every step it trained, as JSON."""

    def __init__(self, path: str = "steps.json") -> None:
        self.path, self.record = path, {"started_at": None, "trained": []}

    def on_train_start(self, trainer, module) -> None:
        self.record["started_at"] = trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.record["trained"].append(trainer.global_step)
        with open(self.path, "w") as file:
            json.dump(self.record, file)
