import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import WRITERS, write_archive, write_image_folder, write_python_dir
from lit_cifar import sources
from lit_cifar.errors import DataError
from lit_cifar.sources import ARCHIVE, CACHE_DIR, PYTHON_DIR


def samples(images, labels):
    """The data set as a sorted list of (label, pixels): equal whatever order a layout stores it in."""
    images, labels = np.asarray(images), np.asarray(labels)
    return sorted((int(label), image.tobytes()) for image, label in zip(images, labels))


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_every_layout_decodes_to_the_same_images_and_labels(tmp_path, tiny_cifar, layout):
    data_dir = WRITERS[layout](tmp_path / "data", tiny_cifar)
    sources.prepare(data_dir, download=False)
    data = sources.load(data_dir)
    train_images, train_labels, test_images, test_labels = tiny_cifar
    assert data.train_images.shape == (60, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (20, 3, 32, 32) and data.train_labels.dtype == torch.int64
    assert samples(data.train_images, data.train_labels) == samples(train_images, train_labels)
    assert samples(data.test_images, data.test_labels) == samples(test_images, test_labels)


def test_jpeg_folder_decodes_to_the_same_shapes_and_labels(tmp_path, tiny_cifar):
    data_dir = write_image_folder(tmp_path / "data", tiny_cifar, suffix=".jpg")
    data = sources.load(data_dir)
    assert data.train_images.shape == (60, 3, 32, 32)
    assert sorted(data.train_labels.tolist()) == sorted(tiny_cifar[1].tolist())
    assert sorted(data.test_labels.tolist()) == sorted(tiny_cifar[3].tolist())


def test_image_modes_are_converted_to_rgb(tmp_path, tiny_cifar):
    data_dir = write_image_folder(tmp_path / "data", tiny_cifar)
    gray = data_dir / "train" / "cat" / "gray.png"
    Image.new("L", (32, 32), 128).save(gray)
    data = sources.load(data_dir)
    assert len(data.train_labels) == 61
    assert (data.train_images == 128).all(dim=(1, 2, 3)).sum() == 1


def test_second_load_reads_the_cache_and_no_temporary_file_is_left(python_data_dir, monkeypatch):
    first = sources.load(python_data_dir)
    cache_files = list((python_data_dir / CACHE_DIR).iterdir())
    assert [f.suffix for f in cache_files] == [".pt"]

    monkeypatch.setattr(sources, "_decode", lambda source: pytest.fail("decoded again despite the cache"))
    second = sources.load(python_data_dir)
    assert torch.equal(first.train_images, second.train_images)


def test_a_changed_source_gets_a_new_cache(tmp_path, tiny_cifar):
    data_dir = write_image_folder(tmp_path / "data", tiny_cifar)
    sources.load(data_dir)
    Image.new("RGB", (32, 32)).save(data_dir / "train" / "dog" / "extra.png")
    assert len(sources.load(data_dir).train_labels) == 61
    assert len(list((data_dir / CACHE_DIR).glob("*.pt"))) == 1  # the stale one is gone


def test_a_run_killed_while_writing_the_cache_leaves_no_cache(python_data_dir, monkeypatch):
    def killed(obj, file):
        file.write(b"half a cache")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        sources.load(python_data_dir)
    assert list((python_data_dir / CACHE_DIR).iterdir()) == []


def test_an_unreadable_cache_is_rebuilt(python_data_dir):
    sources.load(python_data_dir)
    (cache,) = (python_data_dir / CACHE_DIR).iterdir()
    cache.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="rebuilding the unreadable data cache"):
        assert len(sources.load(python_data_dir).train_labels) == 60
    assert torch.load(cache, weights_only=True)["train_images"].shape == (60, 3, 32, 32)


def test_offline_with_nothing_in_data_dir_names_it_and_the_layouts(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    with pytest.raises(DataError) as error:
        sources.prepare(tmp_path, download=True)
    message = str(error.value)
    assert str(tmp_path) in message and "download" in message
    for layout in (PYTHON_DIR, ARCHIVE, "train/<class>"):
        assert layout in message
    assert list(tmp_path.iterdir()) == []


def test_download_off_and_nothing_there(tmp_path):
    with pytest.raises(DataError, match="--data.download is false"):
        sources.prepare(tmp_path, download=False)


def test_truncated_archive_is_named(tmp_path, tiny_cifar):
    data_dir = write_archive(tmp_path / "data", tiny_cifar)
    archive = data_dir / ARCHIVE
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=f"{archive}.*truncated or corrupt"):
        sources.load(data_dir)
    assert not (data_dir / CACHE_DIR).exists() or not any((data_dir / CACHE_DIR).iterdir())


def test_corrupt_python_batch_is_named(python_data_dir):
    batch = python_data_dir / PYTHON_DIR / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DataError, match=f"{batch} is truncated or corrupt"):
        sources.load(python_data_dir)


def test_a_batch_that_would_run_code_is_refused_unrun(python_data_dir, tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    batch = python_data_dir / PYTHON_DIR / "test_batch"
    batch.write_bytes(pickle.dumps({"data": Exploit(), "labels": []}, protocol=2))
    with pytest.raises(DataError, match=f"{batch}.*system has no place in a CIFAR-10 batch"):
        sources.load(python_data_dir)
    assert not marker.exists()


def test_corrupt_image_is_named(tmp_path, tiny_cifar):
    data_dir = write_image_folder(tmp_path / "data", tiny_cifar)
    bad = data_dir / "test" / "ship" / "0008.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{bad} is not a readable image"):
        sources.load(data_dir)


def test_wrong_class_folder_is_named(tmp_path, tiny_cifar):
    data_dir = write_image_folder(tmp_path / "data", tiny_cifar)
    (data_dir / "train" / "cat").rename(data_dir / "train" / "cats")
    with pytest.raises(DataError, match=r"train/cats is not a CIFAR-10 class folder.*airplane, automobile"):
        sources.load(data_dir)


def test_wrong_image_size_is_refused(tmp_path, tiny_cifar):
    data_dir = write_image_folder(tmp_path / "data", tiny_cifar)
    big = data_dir / "train" / "frog" / "big.png"
    Image.new("RGB", (64, 48)).save(big)
    with pytest.raises(DataError, match=f"{big} is 64x48 pixels.*resize or remove it"):
        sources.load(data_dir)


def test_image_folder_without_test_split(tmp_path, tiny_cifar):
    data_dir = write_image_folder(tmp_path / "data", tiny_cifar)
    for file in sorted((data_dir / "test").rglob("*"), reverse=True):
        file.unlink() if file.is_file() else file.rmdir()
    (data_dir / "test").rmdir()
    with pytest.raises(DataError, match="test is missing"):
        sources.load(data_dir)
