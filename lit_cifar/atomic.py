"""Saving files so that a killed process leaves either the old whole file or the new whole file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

# Ends the name of the temporary file a save writes before renaming it into place.
TEMPORARY_SUFFIX = ".tmp"


def atomic_torch_save(obj: Any, target: Path) -> None:
    """``torch.save`` to a temporary file beside ``target``, then rename it into place.

    A rename within one folder is atomic; a killed run, or two runs writing at once, never leave
    half a file under ``target``, and the temporary file is removed on any failure.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
