"""A trained checkpoint as one file that runs without this project: ONNX, TorchScript or a torch.export program.

The exported graph takes what decoding an image file gives and does the rest itself. Its contract:

- input ``images``: N×3×32×32, RGB, channels first (NCHW), any N; uint8 in 0–255 (``input_type="uint8"``,
  the default) or float32 in 0–1 (``"float"``). Other sizes are not resized: resize to 32×32 first.
- output ``logits``: N×10 float32, one column per class in the order of ``lit_cifar.sources.CLASSES``
  (airplane … truck); their softmax is the class probabilities.
- inside: the normalisation the run trained with (its data module's ``normalization``) and the test-time
  augmentation (the checkpoint's ``tta`` unless told otherwise), in float32 (a bf16 recipe's weights are fp32).

``scripts/export.py`` is the command line; ``load_exported`` runs any of the three files again.
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from lit_cifar.atomic import TEMPORARY_SUFFIX
from lit_cifar.augment import NORMALIZATION, Normalization
from lit_cifar.checkpoints import check_checkpoint
from lit_cifar.data import trained_normalization
from lit_cifar.errors import UserError
from lit_cifar.module import untrained_classifier
from lit_cifar.tta import TestTimeAugmentation, tta_logits

Format = Literal["onnx", "torchscript", "exported_program"]
InputType = Literal["uint8", "float"]
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt", "exported_program": ".pt2"}
EXPORT_EXTRA = "pip install -e '.[export]'"


class ExportedClassifier(nn.Module):
    """A trained network behind the input contract above: scaling, normalisation and test-time augmentation
    are part of its forward, so the exported graph holds them.

    The mean and std are buffers of this module (not ``lit_cifar.augment.normalize``'s per-device cache,
    which tracing would fill with placeholder tensors).
    """

    def __init__(self, network: nn.Module, normalization: Normalization, tta: TestTimeAugmentation, input_type: InputType) -> None:
        super().__init__()
        self.network, self.tta, self.input_type = network, tta, input_type
        mean, std = NORMALIZATION[normalization]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scaled = images.float() / 255 if self.input_type == "uint8" else images.float()
        return tta_logits(self.network, (scaled - self.mean) / self.std, self.tta).float()


def exportable(ckpt_path: Path, tta: TestTimeAugmentation | None = None, input_type: InputType = "uint8") -> ExportedClassifier:
    """The checkpoint's network, in eval mode and fp32, behind the input contract; ``tta`` None: the checkpoint's."""
    checkpoint = check_checkpoint(ckpt_path, untrained_classifier)
    hyperparameters = checkpoint.get("hyper_parameters") or {}
    model = untrained_classifier(hyperparameters)
    model.load_state_dict(checkpoint["state_dict"])
    # A plain layout: exporters store channels_last weights as strided views of other tensors.
    network = copy.deepcopy(model.network).float().to(memory_format=torch.contiguous_format)
    normalization = trained_normalization(checkpoint) or "seed"  # runs saved before the data module recorded it used the seed's
    chosen = hyperparameters.get("tta", "none") if tta is None else tta
    return ExportedClassifier(network, normalization, chosen, input_type).eval()


def example_images(count: int, input_type: InputType) -> torch.Tensor:
    """Random images in the input contract, for tracing."""
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return images if input_type == "uint8" else images.float() / 255


def export(model: ExportedClassifier, target: Path, format: Format) -> None:
    """Write ``model`` as ``format`` to ``target`` with a variable batch size. Written beside the target under a
    temporary name and renamed into place: a failed export leaves an earlier file as it was."""
    example = example_images(2, model.input_type)
    batch = {0: torch.export.Dim("batch", min=1)}
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}{TEMPORARY_SUFFIX}{target.suffix}")
    try:
        with torch.no_grad():
            if format == "onnx":
                require_onnx("--format onnx")
                torch.onnx.export(model, (example,), temporary, input_names=["images"], output_names=["logits"],
                                  dynamic_shapes=(batch,), dynamo=True, external_data=False, verbose=False)
            elif format == "exported_program":
                torch.export.save(torch.export.export(model, (example,), dynamic_shapes=(batch,)), temporary)
            else:
                with _torchscript_deprecation_said():
                    torch.jit.trace(model, example).save(temporary)
                print("TorchScript is deprecated by PyTorch (and unsupported from Python 3.14); --format exported_program is its successor",
                      file=sys.stderr)
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)


def require_onnx(what: str) -> None:
    """Refuse in one line when the optional ONNX packages are missing."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if not _importable(name)]
    if missing:
        raise UserError(f"{what} needs {', '.join(missing)}, not installed here: {EXPORT_EXTRA}")


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def load_exported(path: Path, format: Format) -> Callable[[torch.Tensor], torch.Tensor]:
    """An exported file as a function from images (in its input contract) to logits, run by what runs it
    without this project: ONNX Runtime, ``torch.jit.load`` or ``torch.export.load``."""
    if format == "onnx":
        require_onnx("running an ONNX file")
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda images: torch.from_numpy(session.run(["logits"], {"images": np.ascontiguousarray(images.numpy())})[0])
    if format == "torchscript":
        with _torchscript_deprecation_said():
            module = torch.jit.load(path)
    else:
        module = torch.export.load(path).module()
    return torch.no_grad()(module)


@contextmanager
def _torchscript_deprecation_said():
    """torch.jit's FutureWarnings of its deprecation (Python 3.14 drops it), said once in export()'s own line."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is (deprecated|not supported)", FutureWarning)
        yield


def accuracy_of(run: Callable[[torch.Tensor], torch.Tensor], input_type: InputType, images: torch.Tensor,
                labels: torch.Tensor, batch_size: int = 500) -> float:
    """The share of ``images`` (uint8, e.g. the test split) whose largest logit from ``run`` is their label."""
    right = 0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        logits = run(batch if input_type == "uint8" else batch.float() / 255)
        right += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return right / len(images)
