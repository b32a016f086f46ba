"""TensorBoard extras as Lightning callbacks: what each run's hyperparameters, errors, inputs and weights look like.

Each writes to the run's TensorBoard event file on the main process only, with the epoch as x
coordinate like the module's scalars, and does nothing when the run has no TensorBoard logger.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from lit_cifar.augment import denormalize
from lit_cifar.sources import CLASSES


def tensorboard(trainer: Trainer):
    """The run's SummaryWriter, or None off the main process or without a TensorBoard logger."""
    if not trainer.is_global_zero:
        return None
    return next((logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)


def flat_hparams(hparams: dict, prefix: str) -> dict[str, int | float | str | bool]:
    """Nested hyperparameters as "model/optimizer/init_args/lr"-style keys with TensorBoard-friendly values."""
    flat = {}
    for key, value in hparams.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


# What runs being compared usually differ in, first in the HParams table (in this order); the rest follows
# alphabetically. TensorBoard lists the columns in the order the summary names them.
HPARAMS_FIRST = (
    "model/regularization", "model/reg_lambda", "model/l1_ratio", "model/dropout", "model/label_smoothing",
    "model/optimizer/class_path", "model/optimizer/init_args/lr", "model/scheduler/class_path",
    "data/batch_size", "data/train_per_class", "data/augment", "data/augmentation", "trainer/max_epochs",
    "trainer/precision", "model/network", "model/tta",
)


def in_table_order(params: dict) -> dict:
    """``params`` with the keys of HPARAMS_FIRST first, then the others sorted."""
    first = [key for key in HPARAMS_FIRST if key in params]
    return {key: params[key] for key in [*first, *sorted(set(params) - set(first))]}


class HParamsSummary(Callback):
    """Fills TensorBoard's HParams tab: the run's hyperparameters beside its final metrics.

    The summary only names the metric tags; TensorBoard shows each tag's latest scalar, so the
    table always holds the last epoch's ``Accuracy/val`` (and ``Accuracy/test`` after a test run),
    even for a run that stopped early. Lightning itself writes none without a placeholder metric.
    """

    METRICS = ("Accuracy/val", "Loss/val", "Accuracy/train", "Loss/train", "Accuracy/test", "Loss/test", "Accuracy/test_tta")

    def on_fit_start(self, trainer: Trainer, module: LightningModule) -> None:
        self._write(trainer, module)

    def on_test_start(self, trainer: Trainer, module: LightningModule) -> None:
        self._write(trainer, module)

    def _write(self, trainer: Trainer, module: LightningModule) -> None:
        from torch.utils.tensorboard.summary import hparams

        writer = tensorboard(trainer)
        if writer is None:
            return
        params = flat_hparams(dict(module.hparams), "model/")
        if trainer.datamodule is not None:
            params.update(flat_hparams(dict(trainer.datamodule.hparams), "data/"))
        params.update({"trainer/precision": str(trainer.precision), "trainer/max_epochs": trainer.max_epochs or -1})
        # _get_file_writer, as SummaryWriter's own add_* do: it reopens the event file a finished fit closed
        # (a test after fit in one process, as scripts/zero_shot.py and scripts/sweep.py run).
        for summary in hparams(in_table_order(params), {metric: 0.0 for metric in self.METRICS}):
            writer._get_file_writer().add_summary(summary)


class TrainValLayout(Callback):
    """The seed's live figure on TensorBoard's Custom Scalars tab: loss and accuracy, train against validation,
    each pair on one chart, under the seed's tag names. Written once per run, when fitting starts."""

    LAYOUT = {
        "Train vs validation": {
            "Loss: train vs val": ["Multiline", ["Loss/train", "Loss/val"]],
            "Accuracy: train vs val": ["Multiline", ["Accuracy/train", "Accuracy/val"]],
        }
    }

    def on_fit_start(self, trainer: Trainer, module: LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is not None:
            writer.add_custom_scalars(self.LAYOUT)


class LearningRate(Callback):
    """The learning rate once per epoch, at the epoch's start, with the epoch as x coordinate like every curve
    here: ``LearningRate`` for the optimizer's first parameter group and ``LearningRate/group<i>`` for others
    (the speedrun's BatchNorm biases). Lightning's LearningRateMonitor names the tag after the optimizer and,
    under a per-step schedule, logs on a step axis every 50 steps."""

    def on_train_epoch_start(self, trainer: Trainer, module: LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or not trainer.optimizers:
            return
        for index, group in enumerate(trainer.optimizers[0].param_groups):
            tag = "LearningRate" if index == 0 else f"LearningRate/group{index}"
            writer.add_scalar(tag, float(group["lr"]), trainer.current_epoch)


class ConfusionFigure:
    """A confusion matrix as a matplotlib figure, row-normalised, with the counts and class names.

    Built once and redrawn with each epoch's numbers, its layout computed on the first draw only:
    every validation epoch waits for this drawing, and reusing the figure roughly halves its time
    (docs/benchmarks.md).
    """

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        classes = len(CLASSES)
        self.figure = Figure(figsize=(7, 6), layout="constrained")
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_subplot()
        self.image = self.axes.imshow(np.zeros((classes, classes)), cmap="Blues", vmin=0, vmax=1)
        self.axes.set(xticks=range(classes), yticks=range(classes), xlabel="predicted", ylabel="true")
        self.axes.set_xticklabels(CLASSES, rotation=45, ha="right")
        self.axes.set_yticklabels(CLASSES)
        self.counts = [
            [self.axes.text(column, row, "", ha="center", va="center", fontsize=7) for column in range(classes)]
            for row in range(classes)
        ]
        self.figure.colorbar(self.image, ax=self.axes, label="share of the true class")

    def draw(self, matrix: torch.Tensor, title: str) -> np.ndarray:
        """The figure for ``matrix`` (rows: true class) as an RGB image, (3, height, width) uint8."""
        counts = matrix.cpu().numpy()
        rates = counts / counts.sum(1, keepdims=True).clip(min=1)
        self.image.set_data(rates)
        for (row, column), count in np.ndenumerate(counts):
            self.counts[row][column].set_text(str(int(count)))
            self.counts[row][column].set_color("white" if rates[row, column] > 0.5 else "black")
        self.axes.set_title(title)
        self.canvas.draw()
        self.figure.set_layout_engine("none")  # later draws keep the first one's positions
        return np.asarray(self.canvas.buffer_rgba())[..., :3].transpose(2, 0, 1).copy()


class ConfusionMatrixImage(Callback):
    """The validation confusion matrix as an image every validation epoch (and the test one after a test run)."""

    def __init__(self) -> None:
        self.figures: dict[str, ConfusionFigure] = {}

    def on_validation_end(self, trainer: Trainer, module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, module, "val")

    def on_test_end(self, trainer: Trainer, module: LightningModule) -> None:
        self._write(trainer, module, "test")

    def _write(self, trainer: Trainer, module: LightningModule, stage: str) -> None:
        writer = tensorboard(trainer)
        matrix = getattr(module, "confusion", {}).get(stage)
        if writer is not None and matrix is not None:
            if stage not in self.figures:
                self.figures[stage] = ConfusionFigure()
            image = self.figures[stage].draw(matrix, f"{stage}, epoch {trainer.current_epoch}")
            writer.add_image(f"ConfusionMatrix/{stage}", image, trainer.current_epoch)


class AugmentedImageGrid(Callback):
    """Once per run, the first training batch as the network sees it, so the augmentation can be checked by eye."""

    def __init__(self, count: int = 64) -> None:
        self.count, self.done = count, False

    def on_train_batch_start(self, trainer: Trainer, module: LightningModule, batch, batch_idx: int) -> None:
        if self.done:
            return
        self.done = True
        writer = tensorboard(trainer)
        if writer is not None:
            from torchvision.utils import make_grid

            images = denormalize(batch[0][: self.count], getattr(trainer.datamodule, "normalization", "seed"))
            writer.add_image("Augmented training images", make_grid(images, nrow=8, padding=1), trainer.current_epoch)


def named_weights(module: LightningModule) -> dict[str, torch.Tensor]:
    """Every weight tensor (two or more dimensions: no biases, as the penalties), detached, in fp32, by name."""
    return {name: p.detach().float() for name, p in module.named_parameters() if p.ndim >= 2}


def weight_statistics(weights: dict[str, torch.Tensor], sparsity_threshold: float = 1e-3) -> dict[str, torch.Tensor]:
    """The L1 and L2 norms and the sparsity (share of |w| < threshold) of each weight tensor and of all (``.../all``)."""
    flat = torch.cat([weight.flatten() for weight in weights.values()])
    statistics = {}
    for name, weight in {**weights, "all": flat}.items():
        statistics[f"WeightNorm/L1/{name}"] = weight.abs().sum()
        statistics[f"WeightNorm/L2/{name}"] = weight.norm()
        statistics[f"Sparsity/{name}"] = (weight.abs() < sparsity_threshold).float().mean()
    return statistics


class WeightStatistics(Callback):
    """Per epoch and weight tensor: a histogram, the L1 and L2 norms and the sparsity (share of |w| < threshold).

    These show what a regularizer does: L1 drives weights to exactly zero (sparsity rises), L2
    shrinks them all (the L2 norm falls, few reach zero). Biases are left out, as from the penalties.
    Totals over all weights are logged as ``.../all``.
    """

    def __init__(self, sparsity_threshold: float = 1e-3, histograms: bool = True) -> None:
        self.sparsity_threshold, self.histograms = sparsity_threshold, histograms

    def on_train_epoch_end(self, trainer: Trainer, module: LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None:
            return
        epoch = trainer.current_epoch
        weights = named_weights(module)
        if self.histograms:
            for name, weight in weights.items():
                if weight.isfinite().all():
                    writer.add_histogram(f"Weights/{name}", weight, epoch)
        for tag, value in weight_statistics(weights, self.sparsity_threshold).items():
            writer.add_scalar(tag, value, epoch)
