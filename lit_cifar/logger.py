"""The run's TensorBoard logger: Lightning's, with its ``version_N`` folder claimed atomically."""

from __future__ import annotations

from pathlib import Path

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger, claiming its ``version_N`` folder atomically.

    Lightning picks the next free number by listing the folder: two runs started at the same moment
    both pick it and write into one folder. Creating the folder is the claim; whoever loses takes the next.
    ``claimed`` says whether this run made its folder (``lit_cifar.run_folder`` removes only such a folder,
    and the folders above it only if this run made those too).

    ``save_dir`` left unset means the Trainer's ``default_root_dir``, as with Lightning's default logger;
    the command line fills it in (``lit_cifar.cli``), and code of your own gets the working folder.
    """

    def __init__(self, save_dir: _PATH | None = None, **kwargs) -> None:
        super().__init__("." if save_dir is None else save_dir, **kwargs)
        self.claimed = False
        self.made_from: Path | None = None  # the first folder above version_N this run made, if it made any

    def _get_next_version(self) -> int:
        version = super()._get_next_version()
        if rank_zero_only.rank != 0:  # only the main process creates the log folder
            return version
        missing = [folder for folder in (Path(self.root_dir), *Path(self.root_dir).parents) if not folder.exists()]
        self.made_from = missing[-1] if missing else None
        while True:
            try:
                (Path(self.root_dir) / f"version_{version}").mkdir(parents=True)
                self.claimed = True
                return version
            except FileExistsError:
                version += 1
