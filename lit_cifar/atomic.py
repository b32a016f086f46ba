"""Saving files so that a killed process leaves either the old whole file or the new whole file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

# Ends the name of the temporary file a save writes before renaming it into place.
TEMPORARY_SUFFIX = ".tmp"


@contextmanager
def replaced_atomically(target: Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """A file to write in place of ``target``: written beside it under a temporary name and renamed into
    place when the block ends, so ``target`` is either its old whole self or the new whole file.

    A rename within one folder is atomic; a killed run, or two runs writing at once, never leave
    half a file under ``target``, and the temporary file is removed on any failure.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, target: Path) -> None:
    """``torch.save`` to ``target`` through ``replaced_atomically``."""
    with replaced_atomically(target) as file:
        torch.save(obj, file)
