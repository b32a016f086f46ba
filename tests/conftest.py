"""Tests run on the CPU (the GPU tests apart), offline, on tiny CIFAR-10 look-alikes written in the real on-disk formats."""

import os

# The CPU, even on a machine with a GPU: results must not depend on it. The GPU tests (`-m gpu`) are the
# exception, run on a GPU machine with LIT_CIFAR_GPU_TESTS=1.
if not os.environ.get("LIT_CIFAR_GPU_TESTS"):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import io
import json
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch import Callback
from PIL import Image

from lit_cifar.sources import ARCHIVE, CLASSES, PYTHON_DIR, TEST_BATCH, TRAIN_BATCHES

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PER_CLASS = 6  # 60 training images: 12 per python batch
TEST_PER_CLASS = 2


def tiny_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random images (N, 3, 32, 32) with labels 0..9 repeating, so every class is present."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(len(CLASSES)), per_class)
    return rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8), labels


@pytest.fixture
def tiny_cifar():
    return tiny_split(TRAIN_PER_CLASS, seed=1) + tiny_split(TEST_PER_CLASS, seed=2)


def batch_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    # The real batches are protocol-2 pickles of {"data": uint8 rows of 3072, "labels": [int]}.
    return pickle.dumps({"data": images.reshape(len(images), -1), "labels": labels.tolist()}, protocol=2)


def python_batches(train_images, train_labels, test_images, test_labels) -> dict[str, bytes]:
    chunks = zip(np.array_split(train_images, len(TRAIN_BATCHES)), np.array_split(train_labels, len(TRAIN_BATCHES)))
    batches = {name: batch_bytes(*chunk) for name, chunk in zip(TRAIN_BATCHES, chunks)}
    batches[TEST_BATCH] = batch_bytes(test_images, test_labels)
    batches["batches.meta"] = pickle.dumps({"label_names": list(CLASSES)}, protocol=2)
    return batches


def write_python_dir(data_dir: Path, data) -> Path:
    folder = data_dir / PYTHON_DIR
    folder.mkdir(parents=True)
    for name, content in python_batches(*data).items():
        (folder / name).write_bytes(content)
    return data_dir


def write_archive(data_dir: Path, data) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(data_dir / ARCHIVE, "w:gz") as archive:
        for name, content in python_batches(*data).items():
            info = tarfile.TarInfo(f"{PYTHON_DIR}/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return data_dir


def write_image_folder(data_dir: Path, data, suffix: str = ".png") -> Path:
    train_images, train_labels, test_images, test_labels = data
    for split, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        for i, (image, label) in enumerate(zip(images, labels)):
            path = data_dir / split / CLASSES[label] / f"{i:04d}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(path)
    return data_dir


WRITERS = {"python": write_python_dir, "archive": write_archive, "png": write_image_folder}


@pytest.fixture
def python_data_dir(tmp_path, tiny_cifar) -> Path:
    return write_python_dir(tmp_path / "data", tiny_cifar)


@pytest.fixture
def learnable_data_dir(tmp_path) -> Path:
    """Each class a colour of its own under noise: learnable in a few steps, whatever the augmentation."""
    rng = np.random.default_rng(3)
    colours = rng.integers(40, 216, size=(len(CLASSES), 3, 1, 1))
    splits = []
    for per_class in (TRAIN_PER_CLASS, TEST_PER_CLASS):
        labels = np.tile(np.arange(len(CLASSES)), per_class)
        noise = rng.integers(-40, 40, size=(len(labels), 3, 32, 32))
        splits += [(colours[labels] + noise).astype(np.uint8), labels]
    return write_python_dir(tmp_path / "data", tuple(splits))


@pytest.fixture(autouse=True)
def run_in_a_temporary_folder(tmp_path, monkeypatch):
    """Runs write lightning_logs/ and checkpoints/ into the working folder: never the repository's."""
    monkeypatch.chdir(tmp_path)


class LossHistory(Callback):
    """Reads each epoch's Loss/train, which the module logs after callbacks' own on_train_epoch_end."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch > 0:
            self.losses.append(float(trainer.callback_metrics["Loss/train"]))

    def on_train_end(self, trainer, module) -> None:
        self.losses.append(float(trainer.callback_metrics["Loss/train"]))


def trained_checkpoint(root: Path, *flags: str) -> Path:
    """The ``last.ckpt`` of one epoch on tiny data, trained in ``root`` with CIFAR-10's own normalisation (which
    whatever reads the checkpoint has to take from it) and ``flags``: the run the prediction, export and
    serving tests read."""
    from lit_cifar.cli import main

    data_dir = write_python_dir(root / "data", tiny_split(6, seed=1) + tiny_split(2, seed=2))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        main("fit", ["--data.data_dir", str(data_dir), "--max_epochs", "1", "--data.val_size", "10", "--data.batch_size", "16",
                     "--data.download", "false", "--data.normalization", "cifar10", "--trainer.enable_progress_bar", "false",
                     *flags])
    return root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def fit_in_subprocess(data_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``scripts/fit.py --data.data_dir DATA_DIR ARGS`` run in ``cwd`` as a user runs it; the callbacks of
    tests/crash_callbacks.py can be named on its command line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fit.py"), "--data.data_dir", str(data_dir), "--data.download", "false",
         "--trainer.enable_progress_bar", "false", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300, env=env,
    )


def whole_and_killed_runs(data_dir: Path, tmp_path: Path, run: list[str], kill_at_step: int) -> None:
    """The same fit twice, in ``tmp_path/whole`` to its end and in ``tmp_path/crash`` SIGKILLed at
    ``kill_at_step`` (crash_callbacks.KillAtStep): what a resume test compares."""
    (tmp_path / "whole").mkdir(), (tmp_path / "crash").mkdir()
    whole = fit_in_subprocess(data_dir, tmp_path / "whole", *run)
    assert whole.returncode == 0, whole.stderr
    killed = fit_in_subprocess(data_dir, tmp_path / "crash", *run, "--trainer.callbacks+=crash_callbacks.KillAtStep",
                               "--trainer.callbacks.step", str(kill_at_step))
    assert killed.returncode == -9


def recorded_steps(path: Path) -> dict:
    """What crash_callbacks.RecordSteps wrote: the step a run started at and the steps it trained."""
    return json.loads(path.read_text())
