"""CIFAR-10 as a LightningDataModule: where the data comes from, the splits, batches and augmentation.

The whole data set fits in memory as uint8 (180 MB), so it is held on the training device (GPU
memory or RAM) and batches are cut from it by index: no per-image Python, no worker processes, no
host-to-device copy per batch. The seed's augmentation runs on the batch where it is
(``on_after_batch_transfer``, Lightning's hook for this), the same code on CPU and GPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, SequentialSampler

from lit_cifar import sources
from lit_cifar.augment import AugmentBackend, Augmentation, Normalization, normalize, training_augmentation
from lit_cifar.cuda_graph import GraphedFunction
from lit_cifar.errors import ConfigError
from lit_cifar.predict import ImageBatch, ImageFiles, find_images, image_batch

Batch = tuple[torch.Tensor, torch.Tensor]


class ShuffledOrder:
    """A new permutation every epoch that is a pure function of (seed, epoch), so any epoch can be replayed.

    Lightning calls ``set_epoch`` on a loader's ``sampler`` before each epoch.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self) -> torch.Tensor:
        # Drawn on the CPU, so the order is the same whatever the device.
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))


class TensorBatches:
    """Batches cut from in-memory tensors: a gather per batch when shuffled, a view per batch when not.

    Lightning reads a loader's ``sampler`` and ``batch_sampler`` as a DataLoader's: a ShuffledOrder gets
    ``set_epoch`` before each epoch, and torch's SequentialSampler tells Lightning the order is fixed.
    ``state_dict``/``load_state_dict`` make it resumable: a run resumed from a mid-epoch checkpoint
    continues with the very batches the interrupted run had not reached. With several processes
    (DDP), process ``rank`` of ``world_size`` takes every world_size-th image of the order: every
    process draws the same permutation, so the shards never overlap. Lightning only shards
    DataLoaders itself.
    """

    batch_sampler = None

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        sampler: ShuffledOrder | SequentialSampler,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.images, self.labels, self.batch_size, self.sampler = images, labels, batch_size, sampler
        self.rank, self.world_size = rank, world_size
        self.shuffled = isinstance(sampler, ShuffledOrder)
        self.yielded, self.exhausted = 0, False
        self.resume: tuple[int, int] | None = None  # (epoch, batches already trained) from a checkpoint

    def __len__(self) -> int:
        return math.ceil(self._shard_size() / self.batch_size)

    def _shard_size(self) -> int:
        if self.shuffled:  # the same number of steps in every process, or DDP hangs
            return len(self.labels) // self.world_size
        return len(range(self.rank, len(self.labels), self.world_size))  # evaluation: every image exactly once

    def __iter__(self):
        # A generator: nothing below runs before the first batch is asked for, after Lightning's set_epoch.
        epoch = self.sampler.epoch if self.shuffled else 0
        skip = self.resume[1] if self.resume is not None and self.resume[0] == epoch else 0
        self.resume = None
        if self.shuffled:
            order = self.sampler.permutation()[self.rank :: self.world_size][: self._shard_size()]
        else:
            order = torch.arange(self.rank, len(self.labels), self.world_size) if self.world_size > 1 else None
        order = order.to(self.labels.device) if order is not None else None
        self.yielded, self.exhausted = skip, False
        for start in range(skip * self.batch_size, self._shard_size(), self.batch_size):
            self.yielded += 1
            if order is None:
                yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]
            else:  # index_select copies whole images; indexing with a tensor goes element by element, slower
                index = order[start : start + self.batch_size]
                yield self.images.index_select(0, index), self.labels.index_select(0, index)
        self.exhausted = True

    def state_dict(self) -> dict[str, int]:
        return {
            "seed": self.sampler.seed if self.shuffled else 0,
            "epoch": self.sampler.epoch if self.shuffled else 0,
            # Lightning takes this state at the end of a training step: every batch handed out so far
            # was trained on (checked bit for bit against an uninterrupted run in tests/test_checkpoints.py).
            "trained": self.yielded,
            "exhausted": int(self.exhausted),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if self.shuffled:
            self.sampler.seed = state["seed"]
            if not state["exhausted"]:  # an end-of-epoch checkpoint resumes at the next epoch's first batch
                self.resume = (state["epoch"], state["trained"])


def trained_normalization(checkpoint: dict) -> Normalization | None:
    """The input normalisation the data module of a checkpoint's run used (None: the checkpoint does not say).

    Lightning keeps a data module's hyperparameters in the checkpoint beside the model's.
    """
    return (checkpoint.get("datamodule_hyper_parameters") or {}).get("normalization")


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 with a seeded train/validation split of the training set; the official test split stays for ``test``.

    Args:
        data_dir: Where CIFAR-10 is (any layout in ``lit_cifar.sources.ACCEPTED_LAYOUTS``) or is downloaded to.
        batch_size: Training batch size (the seed's 32).
        eval_batch_size: Batch size for validation and test; it changes speed, not results.
        val_size: Training images held out for validation (CIFAR-10 has 50,000); 0 trains on all of them
            and switches validation off.
        split_seed: Seed of the train/validation split, fixed apart from the training seed so runs compare on one split.
        train_per_class: Train on only this many images of each class (few-shot learning), drawn with
            ``split_seed`` from the training split; validation and test stay whole. None: all of them.
        augment: Augment training batches; evaluation only normalises.
        augmentation: ``seed``: the seed's flip, rotation, shear and scale; ``crop_flip``: airbench's
            random 2-pixel shift with reflected borders and alternating flip (for the speedrun's network).
        augment_backend: Who applies the seed's augmentation: ``tensor`` (this project's batched code,
            fastest), ``kornia``, or ``torchvision`` (the seed's own transforms image by image: exact, slowest).
        normalization: Per-channel mean and std: ``seed`` (0.5 and 0.5) or ``cifar10`` (the training
            set's own statistics, airbench's). A checkpoint remembers it, and evaluation takes it from there.
        download: Download the official archive when ``data_dir`` holds no CIFAR-10.
        unseen_classes: Classes held out of training and validation altogether (zero-shot learning,
            ``lit_cifar.zero_shot``): their images are dropped after the train/validation split is drawn
            (the seen classes keep theirs) and before ``train_per_class`` chooses; the test split keeps every class.
        augment_cuda_graph: GPU only: record the augmentation and normalisation of a training batch once as a CUDA
            graph and replay it (``lit_cifar.cuda_graph``): one launch instead of one per kernel. The
            random parameters are still new for every image. The ``tensor`` backend only.
        train_sizes: Progressive resizing: training epoch i's batches are resized (bilinear, antialiased, after
            the augmentation) to ``train_sizes[i]`` pixels square; later epochs, validation and test keep
            the images' 32×32. A smaller image costs less per step (the speedrun's first epochs); the
            network must take any size (AirbenchNet does; SeedCNN's linear layer needs 32×32).
        predict_paths: What ``predict`` classifies (``scripts/predict.py``'s arguments): image files, and folders
            whose files, subfolders included, are read as images; CIFAR-10 itself is then not needed.
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 32,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        train_per_class: int | None = None,
        augment: bool = True,
        augmentation: Augmentation = "seed",
        augment_backend: AugmentBackend = "tensor",
        normalization: Normalization = "seed",
        download: bool = True,
        augment_cuda_graph: bool = False,
        unseen_classes: list[str] | None = None,
        predict_paths: list[str] | None = None,
        train_sizes: list[int] | None = None,
    ) -> None:
        super().__init__()
        minimums = {"batch_size": (batch_size, 1), "eval_batch_size": (eval_batch_size, 1), "val_size": (val_size, 0)}
        for flag, (value, minimum) in {**minimums, "train_per_class": (1 if train_per_class is None else train_per_class, 1)}.items():
            if value < minimum:
                raise ConfigError(f"--data.{flag} must be at least {minimum}, got {value}")
        if any(size < 1 for size in train_sizes or []):
            raise ConfigError(f"--data.train_sizes {train_sizes}: every size must be at least 1 pixel")
        unknown = sorted(set(unseen_classes or []) - set(sources.CLASSES))
        if unknown:
            raise ConfigError(f"--data.unseen_classes {unknown[0]}: not a CIFAR-10 class; they are {', '.join(sources.CLASSES)}")
        if len(set(unseen_classes or [])) >= len(sources.CLASSES):
            raise ConfigError("--data.unseen_classes holds out every class: leave at least one to train on")
        self.save_hyperparameters()
        self.unseen_labels = sorted(sources.CLASSES.index(name) for name in set(unseen_classes or []))
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.eval_batch_size, self.val_size = batch_size, eval_batch_size, val_size
        self.split_seed, self.train_per_class, self.download = split_seed, train_per_class, download
        if augment_cuda_graph and augment and augmentation == "seed" and augment_backend != "tensor":
            raise ConfigError(
                f"--data.augment_cuda_graph needs the augmentation drawn on the GPU, which --data.augment_backend "
                f"{augment_backend} does not do: use --data.augment_backend tensor, or drop --data.augment_cuda_graph"
            )
        self.augmentation = training_augmentation(augmentation, augment_backend) if augment else None
        self.graphed_training_batch = GraphedFunction(self.training_batch) if augment_cuda_graph else None
        self.normalization = normalization
        self.train_sizes = list(train_sizes or [])
        self.predict_paths = [Path(path).expanduser() for path in predict_paths or []]
        self.predict_files: list[Path] = []
        self.predict_skipped: list[tuple[Path, str]] = []
        self.splits: dict[str, Batch] = {}
        self.train_batches: TensorBatches | None = None  # the training loader made last, whose position is saved
        self.resume_train_batches: dict[str, int] | None = None  # a checkpoint's position, for the next one made

    def prepare_data(self) -> None:
        if self.trainer is not None and self.trainer.predicting:
            return  # classifying image files needs nothing of CIFAR-10
        sources.prepare(self.data_dir, download=self.download)

    def setup(self, stage: str) -> None:
        if stage == "predict":
            self.predict_files, self.predict_skipped = find_images(self.predict_paths)
            return
        if self.graphed_training_batch is not None and stage == "fit" and self._device().type != "cuda":
            raise ConfigError("--data.augment_cuda_graph needs a GPU (--accelerator gpu): drop it on the CPU")
        if self.splits:
            return
        data = sources.load(self.data_dir)
        size = len(data.train_labels)
        if self.val_size >= size:
            raise ConfigError(
                f"--data.val_size {self.val_size} leaves nothing to train on: {self.data_dir} has {size} training images"
            )
        order = torch.randperm(size, generator=torch.Generator().manual_seed(self.split_seed))
        val, train = order[: self.val_size].sort().values, order[self.val_size :].sort().values
        if self.unseen_labels:  # after the split, so the seen classes' split is the usual one
            unseen = torch.tensor(self.unseen_labels)
            val, train = (part[~torch.isin(data.train_labels[part], unseen)] for part in (val, train))
        if self.train_per_class is not None:
            train = self._few_per_class(train, data.train_labels[train])
        device = self._device()
        splits = {
            "train": (data.train_images[train], data.train_labels[train]),
            "val": (data.train_images[val], data.train_labels[val]),
            "test": (data.test_images, data.test_labels),
        }
        self.splits = {name: (images.to(device), labels.to(device)) for name, (images, labels) in splits.items()}

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def train_images(self, count: int) -> torch.Tensor:
        """The first ``count`` training images, normalised and not augmented: what a data-dependent
        initialisation (airbench's whitening layer) looks at."""
        return normalize(self.splits["train"][0][:count], self.normalization)

    def _few_per_class(self, train: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``train_per_class`` indices of each class, the first ones of a seeded shuffle of ``train``."""
        shuffled = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed + 1))
        chosen = []
        for label in sorted(set(range(len(sources.CLASSES))) - set(self.unseen_labels)):
            of_class = shuffled[labels[shuffled] == label]
            if len(of_class) < self.train_per_class:
                raise ConfigError(
                    f"--data.train_per_class {self.train_per_class} is more than the {len(of_class)} "
                    f"'{sources.CLASSES[label]}' images in the training split"
                )
            chosen.append(train[of_class[: self.train_per_class]])
        return torch.cat(chosen).sort().values

    def train_dataloader(self) -> TensorBatches:
        images, labels = self.splits["train"]
        if self.trainer is not None and self.trainer.overfit_batches:  # the same batches every epoch
            return self._in_order(images, labels, self.batch_size)
        # The shuffle seed comes from the global RNG, so --seed_everything fixes the data order too
        # (and every DDP process draws the same one).
        seed = int(torch.randint(2**62, ()).item())
        self.train_batches = TensorBatches(images, labels, self.batch_size, ShuffledOrder(len(labels), seed), *self._shard())
        if self.resume_train_batches is not None:
            self.train_batches.load_state_dict(self.resume_train_batches)
            self.resume_train_batches = None
        return self.train_batches

    # Lightning saves a training loader's state_dict with its loop state and hands it back on resume, but
    # drops it when the loader was made before the restore, which happens whenever configure_optimizers
    # asks trainer.estimated_stepping_batches (a OneCycleLR or TriangularLR schedule; Lightning issue
    # #20550): the run then resumed at the first batch of the epoch. So the data module keeps the training
    # order's position too; Lightning restores it before the loader is made.
    def state_dict(self) -> dict:
        return {"train_batches": self.train_batches.state_dict()} if self.train_batches is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self.resume_train_batches = state_dict.get("train_batches")

    def val_dataloader(self) -> TensorBatches:
        return self._in_order(*self.splits["val"], self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return self._in_order(*self.splits["test"], self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(ImageFiles(self.predict_files), batch_size=self.eval_batch_size, collate_fn=image_batch)

    def _in_order(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> TensorBatches:
        return TensorBatches(images, labels, batch_size, SequentialSampler(range(len(labels))), *self._shard())

    def _shard(self) -> tuple[int, int]:
        """This process's rank and the number of processes: (0, 1) unless Lightning runs DDP."""
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def on_after_batch_transfer(self, batch: Batch | ImageBatch, dataloader_idx: int) -> Batch | ImageBatch:
        if isinstance(batch, ImageBatch):
            return batch._replace(images=normalize(batch.images, self.normalization))
        images, labels = batch
        if self.trainer is None or not self.trainer.training or (self.augmentation is None and not self.train_sizes):
            return normalize(images, self.normalization), labels
        if self.graphed_training_batch is not None:
            return self.graphed_training_batch(images, self.trainer.current_epoch), labels
        return self.training_batch(images, self.trainer.current_epoch), labels

    def training_batch(self, images: torch.Tensor, epoch: int) -> torch.Tensor:
        """A uint8 training batch, augmented, resized where ``train_sizes`` says so, and normalised."""
        pixels = images.float().div_(255) if self.augmentation is None else self.augmentation(images, epoch)
        if epoch < len(self.train_sizes):
            size = self.train_sizes[epoch]
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return normalize(pixels, self.normalization)
