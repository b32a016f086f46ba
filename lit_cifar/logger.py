"""The run's TensorBoard logger: Lightning's, with its ``version_N`` folder claimed atomically."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


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
