"""Classifying image files with a trained checkpoint: the files, read in batches, and the writer of the answers.

``scripts/predict.py`` is LightningCLI's ``predict`` subcommand: the data module finds the images
(``find_images``) and reads them in batches (``ImageFiles``), the module's ``predict_step`` gives each
image's class probabilities, and ``PredictionWriter`` prints or saves the top classes.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torch.utils.data import Dataset

from lit_cifar.atomic import replaced_atomically
from lit_cifar.errors import ConfigError
from lit_cifar.sources import CLASSES, IMAGE_SIZE

OUTPUT_FORMATS = (".csv", ".json")


class ImageBatch(NamedTuple):
    """A batch of ``ImageFiles``: the images (uint8, N×3×32×32), their indices into its files, and for each
    file that could not be read why (its image is then all zeros and its prediction is dropped), else ""."""

    images: torch.Tensor
    index: torch.Tensor
    error: list[str]


def find_images(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files to predict and what was skipped with why: each file given, and every file under each
    folder given, subfolders included, sorted. Whether a file is an image is decided by reading it."""
    files, skipped = [], []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file())
            files += inside
            if not inside:
                skipped.append((path, "a folder with no files in it or below it"))
        elif path.exists():
            files.append(path)
        else:
            skipped.append((path, "no such file or folder"))
    return files, skipped


def read_image(path: Path) -> torch.Tensor:
    """Any image file PIL reads (PNG, JPEG, GIF's first frame, WebP, ...) as ``as_network_input`` makes it.
    Raises OSError or ValueError for what is not one."""
    with Image.open(path) as image:
        return as_network_input(image)


def as_network_input(image: Image.Image) -> torch.Tensor:
    """An image of any size and mode as a 3×32×32 uint8 tensor: converted to RGB and resized (bilinear,
    aspect ratio not kept), as the network only knows CIFAR-10's size. Used for files and served uploads."""
    image = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


class ImageFiles(Dataset):
    """Image files read one by one as the DataLoader asks for them; a file that cannot be read becomes a zero
    image with the reason beside it, so one bad file never stops a batch."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            return read_image(self.files[index]), index, ""
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # what PIL raises on bad files
            reason = "not an image PIL can read" if isinstance(err, Image.UnidentifiedImageError) else f"unreadable ({err})"
            return torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8), index, reason


def image_batch(items: list[tuple[torch.Tensor, int, str]]) -> ImageBatch:
    """The DataLoader's collate function for ``ImageFiles``."""
    images, index, error = zip(*items)
    return ImageBatch(torch.stack(images), torch.tensor(index), list(error))


class PredictionWriter(BasePredictionWriter):
    """Each image's ``top_k`` likeliest classes and their probabilities, for the batches of
    ``CIFAR10DataModule.predict_dataloader`` (whose files are the data module's ``predict_files``): printed,
    one line per image, or with ``output`` saved as CSV (``path,class_1,probability_1,...``) or JSON (a list
    of ``{"path", "top"}``), written whole when prediction ends (a failed run leaves an earlier file as it
    was). Every file that was skipped is named on stderr with why; ``skipped`` keeps them. Under several
    processes each writes its own file, ``NAME.rankR.csv``.

    Args:
        output: A ``.csv`` or ``.json`` file to write; None prints to the terminal.
        top_k: How many classes per image, likeliest first.
    """

    def __init__(self, output: str | None = None, top_k: int = 3) -> None:
        super().__init__(write_interval="batch")
        if output is not None and Path(output).suffix.lower() not in OUTPUT_FORMATS:
            raise ConfigError(f"--prediction.output {output}: give a file ending in {' or '.join(OUTPUT_FORMATS)}")
        if not 1 <= top_k <= len(CLASSES):
            raise ConfigError(f"--prediction.top_k must be between 1 and {len(CLASSES)}, got {top_k}")
        self.output = Path(output).expanduser() if output is not None else None
        self.top_k = top_k
        self.rows: list[dict] = []
        self.skipped: list[tuple[Path, str]] = []

    def on_predict_start(self, trainer: Trainer, module: LightningModule) -> None:
        self.rows, self.skipped = [], list(trainer.datamodule.predict_skipped) if trainer.is_global_zero else []
        for path, reason in self.skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)

    def write_on_batch_end(self, trainer, module, prediction: torch.Tensor, batch_indices, batch: ImageBatch, batch_idx, dataloader_idx=0) -> None:
        files = trainer.datamodule.predict_files
        probabilities, classes = prediction.float().topk(self.top_k, dim=1)
        for index, error, p, c in zip(batch.index.tolist(), batch.error, probabilities.tolist(), classes.tolist()):
            if error:
                self.skipped.append((files[index], error))
                print(f"skipped {files[index]}: {error}", file=sys.stderr)
                continue
            row = {"path": str(files[index]), "top": [{"class": CLASSES[k], "probability": q} for k, q in zip(c, p)]}
            self.rows.append(row)
            if self.output is None:
                print(f"{row['path']}: " + ", ".join(f"{t['class']} {t['probability']:.1%}" for t in row["top"]))

    def on_predict_end(self, trainer: Trainer, module: LightningModule) -> None:
        if self.output is not None:
            target = self.output
            if trainer.world_size > 1:
                target = target.with_name(f"{target.stem}.rank{trainer.global_rank}{target.suffix}")
            self.save(target)
            print(f"wrote {len(self.rows)} predictions to {target}", file=sys.stderr)
        if self.skipped:
            print(f"{len(self.rows)} images predicted, {len(self.skipped)} skipped (named above)", file=sys.stderr)

    def save(self, target: Path) -> None:
        if target.suffix.lower() == ".json":
            with replaced_atomically(target, "w", encoding="utf-8") as file:
                file.write("[\n" + ",\n".join(json.dumps(row) for row in self.rows) + "\n]\n")  # a row per line
            return
        with replaced_atomically(target, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["path", *(f"{column}_{k}" for k in range(1, self.top_k + 1) for column in ("class", "probability"))])
            for row in self.rows:
                writer.writerow([row["path"], *(value for t in row["top"] for value in (t["class"], f"{t['probability']:.6f}"))])
