"""What ``--ckpt_path`` names: ``last`` and ``best`` resolved to a checkpoint of an earlier run, and the settings a
resumed run trains with, its own (the run's saved config.yaml) unless the command changes them."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

from lit_cifar.errors import UserError

# Settings a resume may be given anew without training anything else: where the data lies and how progress shows.
NOT_TRAINING_SETTINGS = ("config", "ckpt_path", "data.data_dir", "data.download", "trainer.enable_progress_bar")


def run_checkpoints(log_root: Path) -> list[Path]:
    """The ``last.ckpt`` of every earlier run under ``log_root`` (``lightning_logs/version_N/checkpoints/``)."""
    return list(log_root.glob("*/checkpoints/last.ckpt"))


def newest_run_checkpoint(choice: str, log_root: Path) -> tuple[Path, str]:
    """``last``: the most recently written ``last.ckpt`` of the runs under ``log_root``; ``best``: that run's best
    checkpoint by its watched metric. Returns the file and why it was picked."""
    candidates = run_checkpoints(log_root)
    if not candidates:
        raise UserError(
            f"--ckpt_path {choice}: no earlier run under {log_root}/ left a checkpoints/last.ckpt; "
            "give a checkpoint's path, or leave --ckpt_path out to start afresh"
        )
    last = max(candidates, key=lambda path: path.stat().st_mtime_ns)
    runs = f"{len(candidates)} runs'" if len(candidates) > 1 else "the one run's"
    why = f"the newest of {runs} last.ckpt under {log_root}/"
    if choice == "last":
        return last, why
    return best_checkpoint(last), f"the best checkpoint of {last.parent.parent}, {why}"


def checkpoint_argument(value: str, log_root: Path = Path("lightning_logs")) -> tuple[Path, str | None]:
    """A script's ``--ckpt_path``: ``last`` or ``best`` resolved by ``newest_run_checkpoint`` (with why it was
    picked), any other value the path itself (why: None)."""
    if value in ("last", "best"):
        return newest_run_checkpoint(value, log_root)
    return Path(value), None


def best_checkpoint(last: Path) -> Path:
    """The best checkpoint of the run whose ``last.ckpt`` this is, as its ModelCheckpoint recorded it."""
    import torch

    states = torch.load(last, map_location="cpu", weights_only=True).get("callbacks", {})
    for key, state in states.items():
        if key.startswith(ModelCheckpoint.__name__) and state.get("monitor") and state.get("best_model_path"):
            best = last.parent / Path(state["best_model_path"]).name  # recorded absolute; the folder may have moved
            if best.is_file():
                return best
    raise UserError(
        f"--ckpt_path best: the run {last.parent.parent} kept no best checkpoint (no validation metric was "
        "watched, e.g. with --data.val_size 0): use --ckpt_path last"
    )


def saved_config(checkpoint: Path) -> Path | None:
    """The config.yaml of the run that wrote ``checkpoint`` (``version_N/checkpoints/X.ckpt``), if it has one."""
    config = checkpoint.parent.parent / "config.yaml"
    return config if checkpoint.parent.name == "checkpoints" and config.is_file() else None


def changed_settings(saved: dict, resumed: dict) -> list[str]:
    """``--key saved value -> resumed value`` for the flattened settings that differ and are about training."""
    keys = sorted(set(saved) | set(resumed))
    return [
        f"--{key} {saved.get(key)} -> {resumed.get(key)}" for key in keys
        if saved.get(key) != resumed.get(key) and not key.startswith(NOT_TRAINING_SETTINGS)
    ]
