"""Runs that survive crashes: atomic checkpoints, resumable randomness, ``--ckpt_path last`` that finds the
last run, checkpoints checked before use, a stop on a non-finite loss, log folders claimed atomically.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from lit_cifar.atomic import atomic_torch_save
from lit_cifar.errors import UserError


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, then renames it into place.

    Lightning's own atomic save stages the file in $TMPDIR and moves it, which is a copy (and can
    leave half a file behind if killed) when $TMPDIR is on another filesystem. A rename within one
    folder is atomic: ``last.ckpt`` is always either the previous whole file or the new whole file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, Path(path))


class RNGState(Callback):
    """Saves the random number generators' states in each checkpoint and restores them on resume.

    Lightning does not, so without this a resumed run draws other augmentations and dropout masks
    than the uninterrupted run would have.
    """

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: Trainer, module: LightningModule) -> None:
        # Restored here, after set-up has drawn what it draws, so the stream continues where it was saved.
        state = getattr(self, "_to_restore", None)
        if state is not None:
            torch.set_rng_state(state["torch"])
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])
            self._to_restore = None


def newest_last_checkpoint(log_root: Path) -> Path:
    """The most recently written ``last.ckpt`` of any earlier run under ``log_root`` (e.g. lightning_logs/)."""
    candidates = [path for path in log_root.rglob("last.ckpt") if path.parent.name == "checkpoints"]
    if not candidates:
        raise UserError(
            f"--ckpt_path last: no earlier run under {log_root}/ left a checkpoints/last.ckpt; "
            "give a checkpoint's path, or leave --ckpt_path out to start afresh"
        )
    return max(candidates, key=lambda path: path.stat().st_mtime_ns)


def check_checkpoint(path: Path, model_for: Callable[[dict], torch.nn.Module]) -> dict:
    """Refuse, with a message, a file that is not a checkpoint of this model, before Lightning trips over it.

    ``model_for`` builds the model the checkpoint's hyperparameters describe, whose weights it must match.
    Returns the checkpoint.
    """
    if not path.is_file():
        raise UserError(f"--ckpt_path {path}: no such file")
    try:
        # weights_only: a checkpoint is data; a file that needs arbitrary code to load is refused.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        needs_code = "Weights only load failed" in str(err) and "global" in str(err).lower()
        if not needs_code:
            raise UserError(f"{path} is not a checkpoint ({err})") from err
        raise UserError(
            f"{path} holds objects that are not safe to load (weights_only loading refused it). If you trust "
            f"its source, load it yourself with torch.load(weights_only=False) and re-save its state_dict"
        ) from err
    except Exception as err:
        raise UserError(f"{path} is not a checkpoint ({type(err).__name__}: {err})") from err
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a Lightning checkpoint (it has no state_dict)")
    try:
        module = model_for(checkpoint.get("hyper_parameters") or {})
    except (TypeError, UserError) as err:
        raise UserError(f"{path} is a checkpoint of another model: its hyperparameters do not fit this one ({err})") from err
    expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items() if name.startswith("network.")}
    found = {name: tuple(tensor.shape) for name, tensor in state.items() if name.startswith("network.")}
    if expected != found:
        raise UserError(f"{path} is a checkpoint of another model: its network's weights do not match this one's")
    return checkpoint


class StopOnNonFiniteLoss(Callback):
    """Stops the run with a clear message when the training loss becomes NaN or infinite.

    Each step only keeps its loss tensor (no tensor op, no host sync: copying it into a buffer cost
    about 40 µs of host time per step on the CPU); the kept losses are read every
    ``check_every_n_steps`` steps, at the end of every epoch, and before every checkpoint is
    written, so a checkpoint never holds the weights of a diverged run: the last one written
    before it is kept.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self.losses: list[torch.Tensor] = []  # on the training device, unread
        self.steps: list[int] = []  # the global step of each

    def on_train_batch_end(self, trainer: Trainer, module: LightningModule, outputs, batch, batch_idx: int) -> None:
        self.losses.append(outputs["loss"].detach())
        self.steps.append(trainer.global_step)
        if len(self.steps) == self.check_every_n_steps:
            self.check()

    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        self.check()

    def on_save_checkpoint(self, trainer: Trainer, module: LightningModule, checkpoint: dict) -> None:
        self.check()

    def check(self) -> None:
        if not self.steps:
            return
        losses, steps = torch.stack(self.losses), self.steps
        self.losses, self.steps = [], []
        non_finite = (~torch.isfinite(losses)).nonzero()
        if not len(non_finite):
            return
        first = int(non_finite[0])
        raise NonFiniteLossError(
            f"the training loss became {float(losses[first])} at step {steps[first]}, so training stopped. The usual "
            "cause is a learning rate that is too high (--model.optimizer.lr, or max_lr of a schedule) or a penalty "
            "that is too strong (--model.reg_lambda); lower it and resume from the last checkpoint, which "
            "was written before the loss diverged"
        )


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger, claiming its ``version_N`` folder atomically.

    Lightning picks the next free number by listing the folder: two runs started at the same moment
    both pick it and write into one folder. Creating the folder is the claim; whoever loses takes the next.
    """

    def _get_next_version(self) -> int:
        version = super()._get_next_version()
        if rank_zero_only.rank != 0:  # only the main process creates the log folder
            return version
        while True:
            try:
                (Path(self.root_dir) / f"version_{version}").mkdir(parents=True)
                return version
            except FileExistsError:
                version += 1
