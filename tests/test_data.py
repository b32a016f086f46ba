import pytest
import torch

from torch.utils.data import SequentialSampler

from lit_cifar.data import CIFAR10DataModule, ShuffledOrder, TensorBatches
from lit_cifar.errors import ConfigError


def setup_datamodule(data_dir, **kwargs) -> CIFAR10DataModule:
    datamodule = CIFAR10DataModule(data_dir=str(data_dir), download=False, **kwargs)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_validation_is_a_seeded_part_of_the_training_set_and_test_is_untouched(python_data_dir):
    datamodule = setup_datamodule(python_data_dir, val_size=10)
    (train_images, _), (val_images, _) = datamodule.splits["train"], datamodule.splits["val"]
    assert len(train_images) == 50 and len(val_images) == 10 and len(datamodule.splits["test"][0]) == 20
    train_rows = {tuple(image.flatten().tolist()) for image in train_images}
    assert not any(tuple(image.flatten().tolist()) in train_rows for image in val_images)
    again = setup_datamodule(python_data_dir, val_size=10)
    assert torch.equal(again.splits["val"][0], val_images)
    other = setup_datamodule(python_data_dir, val_size=10, split_seed=1)
    assert not torch.equal(other.splits["val"][0], val_images)


def test_training_order_is_a_new_permutation_each_epoch_and_replayable():
    order = ShuffledOrder(100, seed=3)
    first = order.permutation()
    assert sorted(first.tolist()) == list(range(100))
    order.set_epoch(1)
    second = order.permutation()
    assert not torch.equal(first, second)
    order.set_epoch(0)
    assert torch.equal(order.permutation(), first)


def test_batches_cover_every_image_once():
    images, labels = torch.arange(10).view(10, 1), torch.arange(10)
    batches = TensorBatches(images, labels, batch_size=4, sampler=ShuffledOrder(10, seed=0))
    assert len(batches) == 3
    seen = torch.cat([batch_labels for _, batch_labels in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert [len(b) for _, b in TensorBatches(images, labels, 4, SequentialSampler(range(10)))] == [4, 4, 2]


@pytest.mark.parametrize(("flag", "minimum"), [("batch_size", 1), ("eval_batch_size", 1), ("val_size", 0)])
def test_sizes_below_their_minimum_name_their_flag(flag, minimum):
    with pytest.raises(ConfigError, match=f"--data.{flag} must be at least {minimum}, got {minimum - 1}"):
        CIFAR10DataModule(**{flag: minimum - 1})


def test_validation_set_larger_than_the_training_set(python_data_dir):
    with pytest.raises(ConfigError, match="--data.val_size 60 leaves nothing to train on"):
        setup_datamodule(python_data_dir, val_size=60)


def test_train_per_class_takes_that_many_of_each_class_and_leaves_validation_whole(python_data_dir):
    datamodule = setup_datamodule(python_data_dir, val_size=10, train_per_class=3)
    _, labels = datamodule.splits["train"]
    assert len(labels) == 30 and torch.bincount(labels, minlength=10).tolist() == [3] * 10
    assert len(datamodule.splits["val"][1]) == 10 and len(datamodule.splits["test"][1]) == 20
    again = setup_datamodule(python_data_dir, val_size=10, train_per_class=3)
    assert torch.equal(again.splits["train"][0], datamodule.splits["train"][0])


def test_train_per_class_larger_than_a_class(python_data_dir):
    with pytest.raises(ConfigError, match="--data.train_per_class 6 is more than the"):
        setup_datamodule(python_data_dir, val_size=10, train_per_class=6)


def test_unseen_classes_reach_neither_training_nor_validation_and_test_keeps_them(python_data_dir):
    datamodule = setup_datamodule(python_data_dir, val_size=10, unseen_classes=["cat", "truck"])
    unseen = torch.tensor([3, 9])  # CIFAR-10's labels of cat and truck
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        labels = torch.cat([batch_labels for _, batch_labels in loader])
        assert len(labels) and not torch.isin(labels, unseen).any()
    assert torch.isin(torch.cat([labels for _, labels in datamodule.test_dataloader()]), unseen).sum() == 4
    # The seen classes keep the split they have without held-out classes: the same validation images, minus cat and truck.
    whole = setup_datamodule(python_data_dir, val_size=10)
    kept = ~torch.isin(whole.splits["val"][1], unseen)
    assert torch.equal(datamodule.splits["val"][0], whole.splits["val"][0][kept])
    few = setup_datamodule(python_data_dir, val_size=10, unseen_classes=["cat"], train_per_class=2)
    assert torch.bincount(few.splits["train"][1], minlength=10).tolist() == [2, 2, 2, 0, 2, 2, 2, 2, 2, 2]


@pytest.mark.parametrize(("unseen", "message"), [
    (["cat", "tiger"], "--data.unseen_classes tiger: not a CIFAR-10 class; they are airplane, automobile"),
    (["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
     "--data.unseen_classes holds out every class: leave at least one to train on"),
])
def test_unseen_classes_that_cannot_be_held_out(unseen, message):
    with pytest.raises(ConfigError, match=message):
        CIFAR10DataModule(unseen_classes=unseen)


def test_shards_of_several_processes_split_the_data_without_overlap():
    images, labels = torch.arange(23).view(23, 1), torch.arange(23)
    seen = []
    for rank in range(2):
        train = TensorBatches(images, labels, 4, ShuffledOrder(23, seed=5), rank=rank, world_size=2)
        seen.append(torch.cat([b for _, b in train]))
        assert len(train) == 3 and len(seen[-1]) == 11  # the same step count in both processes
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    val = [torch.cat([b for _, b in TensorBatches(images, labels, 4, SequentialSampler(range(23)), rank, 2)])
           for rank in range(2)]
    assert sorted(torch.cat(val).tolist()) == list(range(23))  # every evaluation image exactly once
