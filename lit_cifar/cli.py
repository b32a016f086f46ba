"""The command line: LightningCLI with the project's defaults, short Trainer flags and one-line errors.

``scripts/fit.py ARGS`` is ``LightningCLI``'s ``fit ARGS`` and ``scripts/test.py ARGS`` its ``test ARGS``,
so every LightningCLI feature (dotted overrides, ``--config``, ``--print_config``) works as documented.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lit_cifar.data import CIFAR10DataModule, trained_normalization
from lit_cifar.errors import UserError
from lit_cifar.module import CIFARClassifier, untrained_classifier
from lit_cifar.checkpoints import AtomicCheckpointIO, RNGState, check_checkpoint, newest_last_checkpoint, with_last_checkpoint
from lit_cifar.nonfinite_loss import StopOnNonFiniteLoss

# Trainer flags common enough to deserve a short form: `--accelerator gpu` as well as `--trainer.accelerator gpu`.
SHORT_TRAINER_FLAGS = ("accelerator", "devices", "max_epochs", "precision")
# Values of --ckpt_path that Lightning resolves itself rather than reading a file ("last" is resolved here).
SPECIAL_CKPT_PATHS = ("best", "hpc", "registry")
DEBUG_ENV = "LIT_CIFAR_DEBUG"


class CifarCLI(LightningCLI):
    """LightningCLI for CIFARClassifier and CIFAR10DataModule with this project's settings."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            CIFARClassifier,
            CIFAR10DataModule,
            args=args,
            run=run,
            # A fixed default seed: two runs that differ in one flag differ only by that flag.
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            # The optimizer and scheduler are the model's own (typed) arguments: --model.optimizer.
            auto_configure_optimizers=False,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        trainer_params = inspect.signature(Trainer.__init__).parameters
        for flag in SHORT_TRAINER_FLAGS:
            # A plain argument copied into the trainer group before instantiation, not a link: jsonargparse
            # refuses a linked target on the command line, and both spellings must keep working.
            parser.add_argument(
                f"--{flag}", type=Optional[trainer_params[flag].annotation], default=None,
                help=f"Short for --trainer.{flag} (wins over it when both are given).",
            )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "trainer.max_epochs": 20,
                "trainer.callbacks": [
                    {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
                    {"class_path": "lit_cifar.callbacks.HParamsSummary"},
                    {"class_path": "lit_cifar.callbacks.ConfusionMatrixImage"},
                    {"class_path": "lit_cifar.callbacks.AugmentedImageGrid"},
                    {"class_path": "lit_cifar.callbacks.WeightStatistics"},
                ],
                "trainer.logger": {
                    "class_path": "lit_cifar.logger.TensorBoardLogger",
                    # hp_metric's placeholder -1 means nothing; the real metrics are Accuracy/* and Loss/*.
                    "init_args": {"save_dir": ".", "name": "lightning_logs", "default_hp_metric": False},
                },
                # Adam as the seed's (lr 1e-3), fused: the same update in one kernel, cheaper (docs/benchmarks.md).
                "model.optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 1e-3, "fused": True}},
                "checkpoint.monitor": "Accuracy/val",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:02d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def instantiate_trainer(self, **kwargs) -> Trainer:
        # The checkpoint group's ModelCheckpoint is forced on every run by LightningCLI; leave it out where it
        # has no job (evaluation) or was switched off (Lightning refuses one with enable_checkpointing=False).
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        wanted = self.subcommand in (None, "fit") and trainer_config.get("enable_checkpointing") is not False
        callbacks = []
        if wanted:
            settings = dict(self._get(self.config, "checkpoint"))
            callbacks = with_last_checkpoint(self._get(self.config_init, "checkpoint"), settings)
        if trainer_config.get("logger") in (False, None):  # Lightning refuses a LearningRateMonitor without a logger
            configured = trainer_config.get("callbacks") or []
            trainer_config["callbacks"] = [c for c in configured if not isinstance(c, LearningRateMonitor)]
        if self.subcommand in (None, "fit"):
            # Not options: what makes a crashed run resumable, and a diverged one stop, is always on,
            # and first, so a diverged run stops before any other callback handles its NaN weights.
            trainer_config["callbacks"] = [RNGState(), StopOnNonFiniteLoss(), *(trainer_config.get("callbacks") or [])]
        trainer_config["plugins"] = [*(trainer_config.get("plugins") or []), AtomicCheckpointIO()]
        return self._instantiate_trainer(trainer_config, callbacks)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        # The scripts pass the subcommand in `args` while the rest comes from sys.argv; LightningCLI would
        # warn about the mix, which is intended here.
        self.config = parser.parse_args(args)
        subcommand = self.config.get("subcommand")
        # Test-time augmentation is a choice of evaluation: one asked for here beats the checkpoint's, whose
        # hyperparameters LightningCLI applies next (before_instantiate_classes puts it back).
        self.requested_tta = self.config[subcommand].model.tta if subcommand else "none"
        if subcommand and self.config[subcommand].get("ckpt_path"):
            # Before LightningCLI reads the checkpoint's hyperparameters, so a bad file gets a message.
            self._resolve_ckpt_path(self.config[subcommand])

    @staticmethod
    def _resolve_ckpt_path(config) -> None:
        """``last``: the newest last.ckpt of the earlier runs under the log folder. Any file: checked."""
        if config.ckpt_path == "last":
            logger = config.trainer.logger
            if logger in (False, None):
                root = Path(config.trainer.default_root_dir or ".") / "checkpoints"
            else:
                init = logger.get("init_args") or {}
                root = Path(init.get("save_dir") or ".") / (init.get("name") or "lightning_logs")
            config.ckpt_path = str(newest_last_checkpoint(root))
            print(f"Resuming from {config.ckpt_path}", file=sys.stderr)
        if config.ckpt_path not in SPECIAL_CKPT_PATHS:
            checkpoint = check_checkpoint(Path(config.ckpt_path), untrained_classifier)
            # The network was trained on inputs normalised one way; evaluating it on others would be silently
            # wrong. LightningCLI takes the model's hyperparameters from the checkpoint; this one follows them.
            trained_with = trained_normalization(checkpoint)
            if trained_with is not None:
                config.data.normalization = trained_with

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False has no subcommand
        for flag in SHORT_TRAINER_FLAGS:
            if config[flag] is not None:
                config.trainer[flag] = config[flag]
        accelerator = config.trainer.accelerator
        if isinstance(accelerator, str) and accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise UserError(
                f"--accelerator {accelerator} was given but no GPU was found (torch.cuda.is_available() is False); "
                "leave it out to train on the CPU"
            )
        precision = str(config.trainer.precision)
        if precision.startswith("16") and not torch.cuda.is_available():
            # Lightning would quietly switch to bf16; say so instead of training other numerics than asked.
            raise UserError(f"--precision {precision} needs a GPU; on the CPU use --precision bf16-mixed")
        if self.requested_tta != "none":
            config.model.tta = self.requested_tta
        if config.data.val_size == 0:
            # Every training image is trained on: nothing to validate, and no "best" checkpoint to choose.
            config.trainer.limit_val_batches = 0
            config.checkpoint.monitor = None
            config.checkpoint.filename = "epoch{epoch:02d}"
        ckpt_path = config.get("ckpt_path")
        if self.subcommand == "test" and not ckpt_path:
            raise UserError("--ckpt_path is required: the checkpoint to evaluate, e.g. lightning_logs/version_0/checkpoints/last.ckpt")


def _not_an_advert(record: logging.LogRecord) -> bool:
    return "💡 Tip" not in record.getMessage()


def quiet_startup() -> None:
    """Drop Lightning's advertising and the warnings that do not apply to this project."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advert)  # added once, however often called
    # Batches are gathered from tensors in memory; worker processes would only add copies.
    warnings.filterwarnings("ignore", message=r".*does not have many workers")
    # Metrics are logged per epoch, so Lightning's per-step logging interval does not matter.
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
    # The summary's size estimate in bf16 is off; the parameter counts it prints are right.
    warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")
    # Epoch metrics come from torchmetrics' compute(), which has already gathered every process's counts.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('.*', ..., sync_dist=True\)`")
    # Evaluating a checkpoint needs none of the callbacks that trained it (checkpointing, RNG state).
    warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint")
    # Lightning's own use of a torch API that newer torch deprecates; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def main(subcommand: str, args: list[str] | None = None) -> None:
    """Run one LightningCLI subcommand; a UserError ends it with a one-line message and exit status 2."""
    quiet_startup()
    args = sys.argv[1:] if args is None else args
    try:
        CifarCLI(args=[subcommand, *args])
    except (UserError, MisconfigurationException) as err:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {err}", file=sys.stderr)
        print(f"(set {DEBUG_ENV}=1 to see the traceback)", file=sys.stderr)
        raise SystemExit(2) from None

