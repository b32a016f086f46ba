"""The run's folder: gone again when a run fails before its first step, and clear of a killed run's half-written
checkpoints when a run starts."""

from __future__ import annotations

import shutil
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_cifar.atomic import TEMPORARY_SUFFIX
from lit_cifar.logger import TensorBoardLogger


class RunFolder(Callback):
    """Keeps ``lightning_logs/version_N`` meaningful.

    A run that fails before its first training (or test) batch, on a bad flag, a missing file or an
    interrupt, leaves no empty ``version_N`` behind: the folder it claimed itself, with the config.yaml
    and event file set-up wrote into it, is removed. A folder it did not claim (a resumed run continuing
    in its own) is never touched. At the start, the checkpoint folders lose the temporary files a
    run killed in the middle of writing a checkpoint left (``lit_cifar.atomic``).
    """

    def __init__(self) -> None:
        self.started = False

    def on_fit_start(self, trainer: Trainer, module: LightningModule) -> None:
        # After every callback's setup: the checkpoint callbacks have resolved their folders by now.
        if not trainer.is_global_zero:
            return
        for callback in trainer.checkpoint_callbacks:
            folder = getattr(callback, "dirpath", None)
            if folder is not None and Path(folder).is_dir():
                for stale in Path(folder).glob(f".*{TEMPORARY_SUFFIX}"):
                    stale.unlink(missing_ok=True)

    def on_train_batch_start(self, trainer: Trainer, module: LightningModule, batch, batch_idx: int) -> None:
        self.started = True

    def on_test_batch_start(self, trainer: Trainer, module: LightningModule, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.started = True

    def on_exception(self, trainer: Trainer, module: LightningModule, exception: BaseException) -> None:
        if self.started or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and logger.claimed:
                if logger._experiment is not None:  # close the event file before its folder goes
                    logger.experiment.close()
                shutil.rmtree(logger.log_dir, ignore_errors=True)
                made = logger.made_from
                if made is not None:  # the folders above version_N this run made, if nothing else went there since
                    for folder in (Path(logger.root_dir), *Path(logger.root_dir).parents):
                        if not folder.is_dir() or any(folder.iterdir()):
                            break
                        folder.rmdir()
                        if folder == made:
                            break
