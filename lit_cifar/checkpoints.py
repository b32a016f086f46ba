"""Checkpoint files: written atomically, ``last.ckpt`` always the latest state, carrying the random state a
resume needs, and a checkpoint checked before anything loads it (what ``--ckpt_path last`` means: lit_cifar.resume)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_cifar.atomic import atomic_torch_save
from lit_cifar.errors import UserError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, then renames it into place.

    Lightning's own atomic save stages the file in $TMPDIR and moves it, which is a copy (and can
    leave half a file behind if killed) when $TMPDIR is on another filesystem. A rename within one
    folder is atomic: ``last.ckpt`` is always either the previous whole file or the new whole file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, Path(path))


def with_last_checkpoint(checkpoint: ModelCheckpoint, settings: dict[str, Any]) -> list[ModelCheckpoint]:
    """``checkpoint`` (built from ``settings``, the ``--checkpoint.*`` flags), and beside it, when it keeps the
    best checkpoint of a watched metric and a ``last.ckpt`` too, a second ModelCheckpoint that writes
    ``last.ckpt`` wherever the first is due to check, so ``last.ckpt`` is always the latest state.

    Since Lightning 2.6, ``save_last`` writes ``last.ckpt`` only at a step where a checkpoint of the metric's
    top k is written too: once ``Accuracy/val`` stopped improving, ``last.ckpt`` stayed the best epoch's, and
    ``--ckpt_path last`` resumed from there, epochs back.
    """
    if checkpoint.monitor is None or checkpoint.save_last is not True:
        return [checkpoint]  # without a metric every checkpoint due is written, and last.ckpt with it
    checkpoint.save_last = False
    last = {"monitor": None, "filename": ModelCheckpoint.CHECKPOINT_NAME_LAST, "save_top_k": 1, "save_last": False,
            "enable_version_counter": False, "auto_insert_metric_name": False}
    return [checkpoint, ModelCheckpoint(**{**settings, **last})]


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
            raise UserError(f"--ckpt_path {path} is not a checkpoint: torch.load cannot read it; give a .ckpt file a run wrote") from err
        raise UserError(
            f"--ckpt_path {path} holds objects that are not safe to load (weights_only loading refused it). If you trust "
            f"its source, load it yourself with torch.load(weights_only=False) and re-save its state_dict"
        ) from err
    except Exception as err:
        raise UserError(f"--ckpt_path {path} is not a checkpoint ({type(err).__name__}: {err}); give a .ckpt file a run wrote") from err
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"--ckpt_path {path} is not a Lightning checkpoint (it has no state_dict)")
    try:
        module = model_for(checkpoint.get("hyper_parameters") or {})
    except (TypeError, UserError) as err:
        raise UserError(f"--ckpt_path {path} is a checkpoint of another model: its hyperparameters do not fit this one ({err})") from err
    expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items() if name.startswith("network.")}
    found = {name: tuple(tensor.shape) for name, tensor in state.items() if name.startswith("network.")}
    if expected != found:
        raise UserError(f"--ckpt_path {path} is a checkpoint of another model: its network's weights do not match this one's")
    return checkpoint
