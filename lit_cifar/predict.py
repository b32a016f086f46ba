"""Classifying image files with a trained checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lit_cifar.augment import Normalization, normalize
from lit_cifar.data import trained_normalization
from lit_cifar.errors import UserError
from lit_cifar.module import CIFARClassifier, untrained_classifier
from lit_cifar.checkpoints import check_checkpoint
from lit_cifar.sources import CLASSES, IMAGE_SIZE, IMAGE_SUFFIXES


class Classifier(NamedTuple):
    """A trained model and the input normalisation it was trained with (a data setting, kept in the checkpoint)."""

    model: CIFARClassifier
    normalization: Normalization


def load_classifier(ckpt_path: Path) -> Classifier:
    """The checkpoint's network in eval mode, read once and checked as ``scripts/test.py`` checks it."""
    checkpoint = check_checkpoint(ckpt_path, untrained_classifier)
    model = untrained_classifier(checkpoint.get("hyper_parameters") or {})
    model.load_state_dict(checkpoint["state_dict"])
    return Classifier(model.eval(), trained_normalization(checkpoint) or "seed")


def image_files(paths: list[Path]) -> Iterator[Path]:
    """The files given, and the image files inside any folder given (sorted, not recursive)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def read_image(path: Path) -> torch.Tensor:
    """Any PIL-readable image as a 3×32×32 uint8 tensor: converted to RGB, resized (bilinear, aspect not kept)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise UserError(f"{path} is not a readable image ({err})") from err


@torch.no_grad()
def class_probabilities(classifier: Classifier, image: torch.Tensor) -> torch.Tensor:
    """Softmax of the logits, with the model's test-time augmentation if it has one."""
    return classifier.model.predict_logits(normalize(image[None], classifier.normalization)).float().softmax(dim=1)[0]


def top_classes(probabilities: torch.Tensor, k: int = 3) -> list[tuple[str, float]]:
    values, indices = probabilities.topk(k)
    return [(CLASSES[i], float(p)) for p, i in zip(values, indices)]
