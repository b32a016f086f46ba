"""The command line: LightningCLI with the project's defaults, short Trainer flags and one-line errors.

``scripts/fit.py ARGS`` is ``LightningCLI``'s ``fit ARGS`` and ``scripts/test.py ARGS`` its ``test ARGS``,
so every LightningCLI feature (dotted overrides, ``--config``, ``--print_config``) works as documented.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import warnings
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Optional

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lit_cifar import cpu
from lit_cifar.checkpoints import AtomicCheckpointIO, RNGState, check_checkpoint, with_last_checkpoint
from lit_cifar.data import CIFAR10DataModule, trained_normalization
from lit_cifar.errors import UserError, parser_error_line
from lit_cifar.module import CIFARClassifier, untrained_classifier
from lit_cifar.nonfinite_loss import StopOnNonFiniteLoss
from lit_cifar.predict import PredictionWriter
from lit_cifar.progress import EpochLines
from lit_cifar.resume import changed_settings, newest_run_checkpoint, saved_config
from lit_cifar.run_folder import RunFolder

# Trainer flags common enough to deserve a short form: `--accelerator gpu` as well as `--trainer.accelerator gpu`.
SHORT_TRAINER_FLAGS = ("accelerator", "devices", "max_epochs", "precision")
# Values of --ckpt_path that Lightning resolves itself rather than reading a file ("last" and "best" are resolved here).
SPECIAL_CKPT_PATHS = ("hpc", "registry")
DEBUG_ENV = "LIT_CIFAR_DEBUG"
# Trainer and checkpoint arguments Lightning checks late, or in words that name no flag, or not at all; with
# their least valid value (-1: no limit, or every checkpoint kept).
MINIMUMS = {"trainer.max_epochs": -1, "trainer.max_steps": -1, "trainer.accumulate_grad_batches": 1,
            "trainer.check_val_every_n_epoch": 1, "trainer.log_every_n_steps": 1, "checkpoint.every_n_train_steps": 0,
            "checkpoint.every_n_epochs": 0, "checkpoint.save_top_k": -1}
CKPT_PATH_HELP = {
    "fit": "Resume training from this checkpoint: a file, 'last' (the most recently written last.ckpt of the runs "
           "under the log folder) or 'best' (that run's best checkpoint). The run's saved config.yaml is used; "
           "flags given beside it change it, and the command says which. (default: null, start afresh)",
    "test": "Required. The checkpoint to evaluate: a file, 'last' (the most recently written last.ckpt of the runs "
            "under the log folder) or 'best' (that run's best checkpoint).",
    "predict": "Required. The checkpoint to classify with: a file, 'last' (the most recently written last.ckpt of the "
               "runs under the log folder) or 'best' (that run's best checkpoint).",
}
# The --help of each script, the project's own options first: its groups in this order, the Trainer's last.
HELP_ORDER = ("options", "ckpt_path", "prediction", "model", "data", "checkpoint", "trainer")
HELP_TITLES = {
    "ckpt_path": "The checkpoint",
    "model": "The model (--model.*: lit_cifar.module.CIFARClassifier)",
    "data": "The data (--data.*: lit_cifar.data.CIFAR10DataModule)",
    "checkpoint": "Checkpoints written while training (--checkpoint.*: Lightning's ModelCheckpoint)",
    "prediction": "What is written (--prediction.*: lit_cifar.predict.PredictionWriter)",
    "trainer": "Lightning's Trainer (--trainer.*)",
}
DESCRIPTIONS = {
    "fit": "Train a CIFAR-10 classifier: the seed's recipe by default, a recipe with --config configs/NAME.yaml. "
           "This project's options first, Lightning's Trainer last; README.md has the guide.",
    "test": "Evaluate a checkpoint on CIFAR-10's test split: --ckpt_path is required; the model's settings come "
            "from the checkpoint. README.md has the guide.",
    "predict": "Print or save the likeliest CIFAR-10 classes of image files (any size and format PIL reads, resized "
               "to 32x32) and of every file in the folders given, subfolders included: --ckpt_path is required; "
               "the model's settings come from the checkpoint. README.md has the guide.",
}
USAGE = {
    "predict": "predict.py --ckpt_path CKPT [--prediction.output FILE.csv|FILE.json] [--prediction.top_k K] "
               "[--trainer.* ...] IMAGE_OR_FOLDER ...",
}
EVALUATION_IGNORES = {"model": "the checkpoint's settings are used, --model.tta apart", "checkpoint": "evaluation writes none"}


class CifarCLI(LightningCLI):
    """LightningCLI for CIFARClassifier (or a subclass: ``model_class``) and CIFAR10DataModule with this project's settings."""

    def __init__(self, args: list[str] | None = None, run: bool = True, model_class: type = CIFARClassifier) -> None:
        super().__init__(
            model_class,
            CIFAR10DataModule,
            args=args,
            run=run,
            # A fixed default seed: two runs that differ in one flag differ only by that flag.
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            # The optimizer and scheduler are the model's own (typed) arguments: --model.optimizer.
            auto_configure_optimizers=False,
            # A refused flag raises, and main() prints one line instead of the usage's hundred.
            parser_kwargs={"exit_on_error": False, **{name: {"description": text} for name, text in DESCRIPTIONS.items()}},
        )

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs) -> None:
        super()._add_subcommands(parser, **kwargs)
        for subcommand, subparser in self._subcommand_parsers.items():
            script = subparser.prog = f"{subcommand}.py"  # scripts/fit.py runs fit, scripts/test.py test, ...
            subparser.usage = USAGE.get(
                subcommand, f"{script} [--config FILE] [--ckpt_path CKPT] [--model.* ...] [--data.* ...] [--trainer.* ...]"
            )
            if subcommand == "predict":
                # The images as plain arguments after the flags, as well as --data.predict_paths.
                subparser.add_argument("images", nargs="*", default=[], help="image files, or folders of them")
                subparser.add_lightning_class_args(PredictionWriter, "prediction")
            for action in subparser._actions:
                if action.dest == "ckpt_path":
                    action.help = CKPT_PATH_HELP.get(subcommand, action.help)
            for group in subparser._action_groups:
                name = help_group(group)
                group.title = HELP_TITLES.get(name, group.title)
                if subcommand != "fit" and name in EVALUATION_IGNORES:
                    group.title = f"{group.title} (ignored here: {EVALUATION_IGNORES[name]})"
            subparser._action_groups.sort(key=lambda group: HELP_ORDER.index(help_group(group)))

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
                    {"class_path": "lit_cifar.callbacks.LearningRate"},
                    {"class_path": "lit_cifar.callbacks.TrainValLayout"},
                    {"class_path": "lit_cifar.callbacks.HParamsSummary"},
                    {"class_path": "lit_cifar.callbacks.ConfusionMatrixImage"},
                    {"class_path": "lit_cifar.callbacks.AugmentedImageGrid"},
                    {"class_path": "lit_cifar.callbacks.WeightStatistics"},
                ],
                "trainer.logger": {
                    "class_path": "lit_cifar.logger.TensorBoardLogger",
                    # hp_metric's placeholder -1 means nothing; the real metrics are Accuracy/* and Loss/*.
                    # No save_dir: the logs follow --trainer.default_root_dir, as Lightning's own default logger's do.
                    "init_args": {"name": "lightning_logs", "default_hp_metric": False},
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
        fitting = self.subcommand in (None, "fit")
        callbacks = []
        if fitting and trainer_config.get("enable_checkpointing") is not False:
            settings = dict(self._get(self.config, "checkpoint"))
            callbacks = with_last_checkpoint(self._get(self.config_init, "checkpoint"), settings)
        configured = list(trainer_config.get("callbacks") or [])
        if trainer_config.get("logger") in (False, None):  # Lightning refuses a LearningRateMonitor without a logger
            configured = [c for c in configured if not isinstance(c, LearningRateMonitor)]
        if trainer_config.get("enable_progress_bar") is not False and not sys.stdout.isatty():
            if not any(isinstance(c, ProgressBar) for c in configured):
                configured.append(EpochLines())  # a log file gets one line per epoch, not the bar's redraws
        # Not options, and first: what removes a run's folder when it fails before starting; what makes a
        # crashed run resumable and a diverged one stop, before any other callback handles its NaN weights.
        always = [RunFolder(), RNGState(), StopOnNonFiniteLoss()] if fitting else [RunFolder()]
        if self.subcommand == "predict":
            callbacks = [self._get(self.config_init, "prediction")]
            trainer_config["logger"] = False  # classifying files writes no run folder
        trainer_config["callbacks"] = [*always, *configured]
        trainer_config["plugins"] = [*(trainer_config.get("plugins") or []), AtomicCheckpointIO()]
        return self._instantiate_trainer(trainer_config, callbacks)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        # The scripts pass the subcommand in `args` while the rest comes from sys.argv; LightningCLI would
        # warn about the mix, which is intended here.
        self.config = parser.parse_args(args)
        subcommand = self.config.get("subcommand")
        given = {arg.split("=")[0] for arg in args}
        # A precision on the command line is used as given; a config file's or the checkpoint's is a recipe's
        # choice, which before_instantiate_classes may change to what is fast on this CPU.
        self.precision_given = bool(given & {"--precision", "--trainer.precision"})
        self.trained_precision_of = None
        # Test-time augmentation is a choice of evaluation: one asked for here beats the checkpoint's, whose
        # hyperparameters LightningCLI applies next (before_instantiate_classes puts it back).
        self.requested_tta = self.config[subcommand].model.tta if subcommand else "none"
        if not subcommand or not self.config[subcommand].get("ckpt_path"):
            return
        # Before LightningCLI reads the checkpoint's hyperparameters, so a bad file gets a message.
        checkpoint, why = self._resolve_ckpt_path(self.config[subcommand])
        if subcommand == "fit" and checkpoint is not None:
            self._resume_as_configured(parser, args, checkpoint, why)
        if subcommand in ("test", "predict") and checkpoint is not None and not self.precision_given \
                and not given & {"--config", "-c"}:
            self._evaluate_at_trained_precision(checkpoint)

    def _evaluate_at_trained_precision(self, checkpoint: Path) -> None:
        """Evaluate at the precision the run trained with (its saved config.yaml), unless the command says otherwise:
        the model's settings come from the checkpoint, the Trainer's would otherwise be the defaults (fp32)."""
        saved = saved_config(checkpoint)
        trained = yaml.safe_load(saved.read_text()) if saved is not None else None
        if not isinstance(trained, dict):
            return
        precision = trained.get("precision") or (trained.get("trainer") or {}).get("precision")
        if precision is None or (str(precision).startswith("16") and not torch.cuda.is_available()):
            return  # fp16 needs a GPU: evaluated in fp32 here
        self.config[self.config.subcommand].trainer.precision = precision
        self.trained_precision_of = checkpoint.parent.parent  # said once the precision is settled

    def _resolve_ckpt_path(self, config) -> tuple[Path | None, str]:
        """``last`` and ``best``: a checkpoint of the newest run under the log folder. Any file: checked."""
        why = "the path given"
        if config.ckpt_path in ("last", "best"):
            checkpoint, why = newest_run_checkpoint(config.ckpt_path, log_root(config))
            config.ckpt_path = str(checkpoint)
        if config.ckpt_path in SPECIAL_CKPT_PATHS:
            return None, why
        checkpoint = check_checkpoint(Path(config.ckpt_path), partial(untrained_classifier, model_class=self.model_class))
        # The network was trained on inputs normalised one way; evaluating it on others would be silently
        # wrong. LightningCLI takes the model's hyperparameters from the checkpoint; this one follows them.
        trained_with = trained_normalization(checkpoint)
        if trained_with is not None:
            config.data.normalization = trained_with
        if self.config.subcommand != "fit":
            print(f"Evaluating {config.ckpt_path} ({why})", file=sys.stderr)
        return Path(config.ckpt_path), why

    def _resume_as_configured(self, parser: LightningArgumentParser, args: list[str], checkpoint: Path, why: str) -> None:
        """Resume with the run's own saved configuration, this command's flags applied over it; in the run's own
        folder when they change nothing about training and it resumes from the run's last state."""
        saved = saved_config(checkpoint)
        if saved is None:
            print(f"Resuming from {checkpoint} ({why}); it has no config.yaml beside its run folder, so this "
                  f"command's settings are used", file=sys.stderr)
            return
        subcommand, *given = args
        resume = [subcommand, "--config", str(saved)]
        try:
            before = parser.parse_args([*resume, "--ckpt_path", str(checkpoint)])
        except argparse.ArgumentError as err:
            raise UserError(f"--ckpt_path {checkpoint}: its run's {saved} no longer parses ({parser_error_line(str(err))}): "
                            f"resume with --config FILE of your own") from err
        self.config = parser.parse_args([*resume, *given, "--ckpt_path", str(checkpoint)])
        # The run's command typed again with --ckpt_path: its --trainer.callbacks+=X appends X to the saved list,
        # which has it already (Lightning refuses two stateful callbacks of one kind). Each is kept once.
        callbacks = self.config.fit.trainer.callbacks
        if isinstance(callbacks, list):
            self.config.fit.trainer.callbacks = [c for i, c in enumerate(callbacks) if c not in callbacks[:i]]
        changed = changed_settings(flat(before.fit.as_dict()), flat(self.config.fit.as_dict()))
        run_dir = checkpoint.parent.parent
        logger = self.config.fit.trainer.logger
        own_folder = (not changed and checkpoint.name == "last.ckpt" and isinstance(logger, Namespace)
                      and log_root(self.config.fit).resolve() == run_dir.parent.resolve())
        if own_folder:
            logger["init_args.version"] = run_dir.name  # on into version_N itself: no new folder
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            self.save_config_callback = None  # its config.yaml stays the one it started with
        print(f"Resuming from {checkpoint} ({why}) with its run's settings ({saved})"
              + (f", continuing in {run_dir}" if own_folder else "")
              + (f"; this command changes {'; '.join(changed)}, so it trains in a new version_N" if changed else ""),
              file=sys.stderr)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False has no subcommand
        for flag in SHORT_TRAINER_FLAGS:
            if config[flag] is not None:
                config.trainer[flag] = config[flag]
        logger = config.trainer.logger
        if isinstance(logger, Namespace) and logger.get("init_args.save_dir", None) is None:
            logger["init_args.save_dir"] = config.trainer.default_root_dir or "."  # as Lightning's default logger
        elif isinstance(logger, Namespace):
            check_folder("--trainer.logger.init_args.save_dir", logger["init_args.save_dir"])
        if config.trainer.default_root_dir:
            check_folder("--trainer.default_root_dir", config.trainer.default_root_dir)
        check_folder("--data.data_dir", config.data.data_dir)
        for flag, minimum in MINIMUMS.items():
            value = config.get(flag)
            if isinstance(value, int) and value < minimum:
                raise UserError(f"--{flag} must be at least {minimum}, got {value}")
        accelerator = config.trainer.accelerator
        if isinstance(accelerator, str) and accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise UserError(
                f"--accelerator {accelerator} was given but no GPU was found (torch.cuda.is_available() is False); "
                "leave it out to train on the CPU"
            )
        precision = str(config.trainer.precision)
        if precision.startswith("16") and not torch.cuda.is_available():
            # Lightning would quietly switch to bf16; say so instead of training other numerics than asked.
            cpu_precision = "bf16-mixed" if cpu.has_bf16_units() else "32-true (this CPU has no bf16 units)"
            raise UserError(f"--precision {precision} needs a GPU; on the CPU use --precision {cpu_precision}")
        if precision.startswith("bf16") and not self.precision_given and trains_on_cpu(config.trainer.accelerator) \
                and not cpu.has_bf16_units():
            # A recipe's bf16 is there for speed, and emulated it is many times slower than fp32 (docs/speed.md).
            config.trainer.precision = "32-true"
            print(f"Running in 32-true, not the {precision} asked for: this CPU ({cpu.cpu_model()}) has no bf16 units "
                  f"(AVX-512 BF16 or AMX), so bf16 would be many times slower (--precision {precision} forces it)",
                  file=sys.stderr)
        elif self.trained_precision_of is not None:
            print(f"Evaluating in {precision}, the precision {self.trained_precision_of} trained with "
                  "(--precision chooses another)", file=sys.stderr)
        if config.data.get("train_sizes") and config.model.get("network") == "seed_cnn":
            raise UserError("--data.train_sizes needs a network that takes any image size, and SeedCNN's linear layer "
                            "wants 32×32: add --model.network airbench, or drop --data.train_sizes")
        if self.requested_tta != "none":
            config.model.tta = self.requested_tta
        if config.data.val_size == 0:
            # Every training image is trained on: nothing to validate, and no "best" checkpoint to choose.
            config.trainer.limit_val_batches = 0
            config.checkpoint.monitor = None
            config.checkpoint.filename = "epoch{epoch:02d}"
        ckpt_path = config.get("ckpt_path")
        if self.subcommand in ("test", "predict") and not ckpt_path:
            raise UserError(f"--ckpt_path is required: the checkpoint to {'evaluate' if self.subcommand == 'test' else 'classify with'}, "
                            "e.g. --ckpt_path last, or lightning_logs/version_0/checkpoints/last.ckpt")
        if self.subcommand == "predict":
            self.save_config_callback = None  # no run folder to save it in: it would land in the working folder
            config.data.predict_paths = [*(config.data.predict_paths or []), *config.pop("images")]
            if not config.data.predict_paths:
                raise UserError("give the image files or folders to classify: predict.py --ckpt_path CKPT cat.jpg photos/")


def help_group(group: argparse._ArgumentGroup) -> str:
    """Which of HELP_ORDER a group of a script's --help is, by its first option's name; any other is the Trainer's."""
    dests = [action.dest for action in group._group_actions]
    name = "options" if group.title == "options" else (dests[0].split(".")[0] if dests else "trainer")
    return name if name in HELP_ORDER else "trainer"


def trains_on_cpu(accelerator) -> bool:
    """Whether the Trainer will run on the CPU: asked for, or left to choose on a machine without a GPU."""
    if accelerator == "cpu":
        return True
    return accelerator in (None, "auto") and not torch.cuda.is_available() and not torch.backends.mps.is_available()


def log_root(config) -> Path:
    """The folder whose ``version_N`` runs ``--ckpt_path last`` looks through: the logger's, or without a logger
    the Trainer's ``default_root_dir``, as Lightning keeps its checkpoints."""
    logger = config.trainer.logger
    root = Path(config.trainer.default_root_dir or ".")
    if logger in (False, None):
        return root
    return Path(logger.get("init_args.save_dir", None) or root) / (logger.get("init_args.name", None) or "lightning_logs")


def check_folder(flag: str, path: str | os.PathLike) -> None:
    """Refuse, with the flag's name, a folder that cannot be made or written: a file, or one under a file."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder: give a folder's path (it is made if missing)")
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, so no folder can be made under it: give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: no permission to write in {existing}: give a folder you can write to")


def flat(tree: dict, prefix: str = "") -> dict:
    """Nested settings as {"trainer.max_epochs": 20, ...}; lists stay whole."""
    items = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            items.update(flat(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


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
    # A resume into a new version_N starts its best-checkpoint bookkeeping afresh there; the CLI says where it trains.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    # Lightning's own use of a torch API that newer torch deprecates; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


# The exceptions a user's input causes: each becomes one line (error_line), everything else is a bug.
USER_ERRORS = (UserError, MisconfigurationException, argparse.ArgumentError, OSError)


def error_line(err: Exception, args: list[str], script: str) -> str:
    """The one line a user error of ``script ARGS`` prints, after ``error: ``."""
    if isinstance(err, argparse.ArgumentError) and str(err).startswith("Problems parsing config"):
        files = [value for flag, value in zip(args, args[1:]) if flag in ("--config", "-c")]
        return f"--config {' '.join(files)}: not a YAML or JSON file that parses ({parser_error_line(str(err))})"
    if isinstance(err, argparse.ArgumentError):
        return f"{parser_error_line(str(err))} ({script} --help lists the options)"
    if isinstance(err, OSError):  # the file system refused a path of the command line or a config file
        return f"{err.strerror or err}: {err.filename}; check the paths the flags and config files give"
    return " ".join(str(err).split())


@contextmanager
def one_line_errors(args: list[str], script: str):
    """An error the user's input caused, raised inside, ends the program with one line and exit status 2
    (``LIT_CIFAR_DEBUG=1``: the traceback instead)."""
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {error_line(err, args, script)}", file=sys.stderr)
        raise SystemExit(2) from None


def main(subcommand: str, args: list[str] | None = None, cli: type[CifarCLI] = CifarCLI) -> CifarCLI:
    """Run one LightningCLI subcommand; an error the user's input caused ends it with one line and exit status 2."""
    quiet_startup()
    args = sys.argv[1:] if args is None else args
    with one_line_errors(args, f"{subcommand}.py"):
        return cli(args=[subcommand, *args])
