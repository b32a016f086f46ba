"""CIFAR-10 on disk, in whichever layout the user has, decoded once into a uint8 cache.

Accepted in ``data_dir`` (first match wins): torchvision's extracted ``cifar-10-batches-py/``,
the official ``cifar-10-python.tar.gz`` (read in place, never extracted), or an image folder
``train/<class>/*`` + ``test/<class>/*``. With none of them, :func:`prepare` downloads the
official archive. Whatever the source, it is decoded once to ``lit_cifar_cache/*.pt``: a
second run loads 180 MB of uint8 tensors instead of decoding 60,000 files.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import pickle
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lit_cifar.atomic import atomic_torch_save
from lit_cifar.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SIZE = 32
PYTHON_DIR = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
CACHE_DIR = "lit_cifar_cache"
ACCEPTED_LAYOUTS = (f"{PYTHON_DIR}/ (torchvision's extracted download)", f"{ARCHIVE} (the official archive)",
                    "train/<class>/ and test/<class>/ folders of .png or .jpg images")


class Cifar10(NamedTuple):
    """The whole data set as uint8 images (N, 3, 32, 32) and int64 labels (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


@dataclass(frozen=True)
class Source:
    kind: str  # "python", "archive" or "images"
    path: Path


def find_source(data_dir: Path) -> Source | None:
    if (data_dir / PYTHON_DIR).is_dir():
        return Source("python", data_dir / PYTHON_DIR)
    if (data_dir / ARCHIVE).is_file():
        return Source("archive", data_dir / ARCHIVE)
    if (data_dir / "train").is_dir():
        return Source("images", data_dir)
    return None


def missing_data_message(data_dir: Path, reason: str) -> str:
    return (
        f"no CIFAR-10 in --data.data_dir {data_dir} = {data_dir.absolute()} ({reason}): put {', '.join(ACCEPTED_LAYOUTS[:-1])} "
        f"or {ACCEPTED_LAYOUTS[-1]} there, or point --data.data_dir at a folder that holds one"
    )


def prepare(data_dir: Path, download: bool) -> None:
    """Make sure the cache exists, downloading the archive first if ``data_dir`` holds no CIFAR-10."""
    source = find_source(data_dir)
    if source is None:
        if not download:
            raise DataError(missing_data_message(data_dir, "and --data.download is false"))
        source = _download(data_dir)
    if not _cache_path(data_dir, source).is_file():
        _build_cache(data_dir, source)


def load(data_dir: Path) -> Cifar10:
    """The decoded data set, from the cache when it is there and readable."""
    source = find_source(data_dir)
    if source is None:
        raise DataError(missing_data_message(data_dir, "nothing there in an accepted layout"))
    cache = _cache_path(data_dir, source)
    if cache.is_file():
        try:
            return Cifar10(**torch.load(cache, map_location="cpu", weights_only=True, mmap=True))
        except Exception as err:  # an unreadable cache is ours to rebuild, never the user's problem
            warnings.warn(f"rebuilding the unreadable data cache {cache} ({err})", stacklevel=2)
    return _build_cache(data_dir, source)


def _download(data_dir: Path) -> Source:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_url

    # Downloaded under a temporary name and renamed when complete and verified, so an
    # interrupted download is never mistaken for the archive on the next run.
    partial = data_dir / (ARCHIVE + ".part")
    try:
        download_url(CIFAR10.url, str(data_dir), filename=partial.name, md5=CIFAR10.tgz_md5)
    except (OSError, RuntimeError) as err:
        partial.unlink(missing_ok=True)
        raise DataError(missing_data_message(data_dir, f"the download from {CIFAR10.url} failed: {err}")) from err
    partial.replace(data_dir / ARCHIVE)
    return Source("archive", data_dir / ARCHIVE)


def _fingerprint(source: Source) -> str:
    """A digest of the source files' names, sizes and modification times: a changed source gets a new cache.

    Plain os.scandir, not pathlib: it runs on every start, over 60,000 files for an image folder.
    """
    digest = hashlib.sha256(source.kind.encode())
    if source.kind == "images":
        entries = [entry for split in ("train", "test") for entry in _scan_split(source.path / split)]
    elif source.kind == "python":
        entries = [entry for entry in os.scandir(source.path) if entry.name in (*TRAIN_BATCHES, TEST_BATCH)]
    else:
        entries = [entry for entry in os.scandir(source.path.parent) if entry.name == ARCHIVE]
    for entry in sorted(entries, key=lambda entry: entry.path):
        stat = entry.stat()
        digest.update(f"{entry.path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _cache_path(data_dir: Path, source: Source) -> Path:
    return data_dir / CACHE_DIR / f"cifar10-{source.kind}-{_fingerprint(source)}.pt"


def _build_cache(data_dir: Path, source: Source) -> Cifar10:
    data = _decode(source)
    cache = _cache_path(data_dir, source)
    try:
        atomic_torch_save(data._asdict(), cache)  # a killed run leaves no cache or a whole one
        for stale in cache.parent.glob(f"cifar10-{source.kind}-*.pt"):
            if stale != cache:  # the cache of an earlier version of this source: nothing can use it again
                stale.unlink(missing_ok=True)
    except OSError as err:
        warnings.warn(f"could not write the data cache {cache} ({err}); the next run decodes again", stacklevel=2)
    return data


def _decode(source: Source) -> Cifar10:
    if source.kind == "images":
        return Cifar10(*_decode_image_split(source.path / "train"), *_decode_image_split(source.path / "test"))
    if source.kind == "python":
        batches = {}
        for name in (*TRAIN_BATCHES, TEST_BATCH):
            path = source.path / name
            if not path.is_file():
                raise DataError(f"{path} is missing: {PYTHON_DIR}/ needs {', '.join(TRAIN_BATCHES)} and {TEST_BATCH}")
            with open(path, "rb") as file:
                batches[name] = _read_batch(file, path)
    else:
        batches = _read_archive(source.path)
    train = [batches[name] for name in TRAIN_BATCHES]
    return Cifar10(
        torch.cat([images for images, _ in train]),
        torch.cat([labels for _, labels in train]),
        *batches[TEST_BATCH],
    )


def _read_archive(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    wanted = {f"{PYTHON_DIR}/{name}": name for name in (*TRAIN_BATCHES, TEST_BATCH)}
    batches = {}
    try:
        # Streamed in order ("r|gz"): random access into a gzip stream would decompress it once per member.
        with tarfile.open(path, "r|gz") as archive:
            for member in archive:
                if member.name in wanted and member.isfile():
                    batches[wanted[member.name]] = _read_batch(archive.extractfile(member), path)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataError(f"{path} is truncated or corrupt ({err}): delete it and run again to download it anew") from err
    missing = [member for member, name in wanted.items() if name not in batches]
    if missing:
        raise DataError(f"{path} is not the CIFAR-10 python archive: it lacks {', '.join(missing)}")
    return batches


class _BatchUnpickler(pickle.Unpickler):
    """CIFAR-10's python batches are pickles: allow only the numpy array they hold, so a tampered file runs no code."""

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    ALLOWED = {
        ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes into a protocol-2 pickle
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} has no place in a CIFAR-10 batch") from None


def _read_batch(file, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        # latin1: the batches were pickled by Python 2, whose byte strings hold the pixel data.
        entry = _BatchUnpickler(file, encoding="latin1").load()
        images = entry.get("data", entry.get(b"data"))
        labels = np.asarray(entry.get("labels", entry.get(b"labels")), dtype=np.int64)
    except Exception as err:
        raise DataError(f"{path} is truncated or corrupt, not a CIFAR-10 batch ({err}): replace it") from err
    pixels = 3 * IMAGE_SIZE * IMAGE_SIZE
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 2
        or images.shape[1] != pixels
        or labels.shape != (images.shape[0],)
        or not ((labels >= 0) & (labels < len(CLASSES))).all()
    ):
        raise DataError(f"{path} is not a CIFAR-10 batch (expected uint8 rows of {pixels} pixels and labels 0-9): replace it")
    images = torch.from_numpy(images.copy()).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
    return images, torch.from_numpy(labels)


def _scan_split(split_dir: Path) -> list[os.DirEntry]:
    """The image files of train/ or test/, checking that every folder in it is a CIFAR-10 class."""
    if not split_dir.is_dir():
        raise DataError(
            f"{split_dir} is missing: an image-folder data_dir needs both train/<class>/ and test/<class>/"
        )
    entries = []
    for class_dir in sorted(os.scandir(split_dir), key=lambda entry: entry.name):
        if class_dir.name.startswith("."):
            continue
        if not class_dir.is_dir() or class_dir.name not in CLASSES:
            raise DataError(
                f"{class_dir.path} is not a CIFAR-10 class folder: {split_dir} may hold only folders named "
                f"{', '.join(CLASSES)}; rename or move it"
            )
        entries += sorted(
            (e for e in os.scandir(class_dir) if e.name.lower().endswith(IMAGE_SUFFIXES) and not e.name.startswith(".")),
            key=lambda entry: entry.name,
        )
    if not entries:
        raise DataError(f"{split_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return entries


def _decode_image_split(split_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Any PIL mode is converted to RGB; any size other than 32x32 is refused, naming the file."""
    files = [Path(entry.path) for entry in _scan_split(split_dir)]
    images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    labels = torch.tensor([CLASSES.index(f.parent.name) for f in files], dtype=torch.int64)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                    raise DataError(
                        f"{file} is {image.size[0]}x{image.size[1]} pixels; CIFAR-10 images are "
                        f"{IMAGE_SIZE}x{IMAGE_SIZE}: resize or remove it"
                    )
                images[i] = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise DataError(f"{file} is not a readable image ({err}): replace or remove it") from err
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels
