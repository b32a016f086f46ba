"""The LightningModule: the seed's CNN trained on cross-entropy plus a weight penalty, with accuracy metrics."""

from __future__ import annotations

from typing import Literal, get_args

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lit_cifar.errors import ConfigError
from lit_cifar.networks import SeedCNN
from lit_cifar.regularization import Regularization, penalized_weights, penalty
from lit_cifar.sources import CLASSES


class CIFARClassifier(L.LightningModule):
    """SeedCNN with the seed's training objective and what it logged.

    TensorBoard gets, once per epoch and with the epoch as x-axis as in the seed: ``Loss/train``,
    ``Accuracy/train``, ``Loss/val``, ``Accuracy/val`` (and ``Loss/test``, ``Accuracy/test``).
    ``Loss/*`` is the cross-entropy alone, so train and validation curves compare like with like;
    the penalty is logged apart as ``Penalty/train`` and the optimised objective is their sum.

    Args:
        dropout: Dropout probability before each linear layer (the seed used none).
        regularization: Weight penalty added to the loss: none, l1 (lasso), l2 (ridge) or elastic_net.
        reg_lambda: Strength λ of the penalty.
        l1_ratio: Elastic net's share of L1: λ·(ratio·L1 + (1 − ratio)·L2).
        label_smoothing: Cross-entropy label smoothing for training (the seed used none); ``Loss/train`` is then
            the smoothed loss, and validation and test keep the plain cross-entropy.
        optimizer: Built from the parameters; the seed's Adam with lr 1e-3 by default.
        scheduler: Optional learning-rate schedule, stepped once per epoch (ReduceLROnPlateau watches Loss/val).
            A schedule whose ``total_steps`` is left unset (OneCycleLR) gets the run's number of optimizer
            steps from the Trainer and is stepped after every batch.
        channels_last: Keep activations in NHWC layout. Same arithmetic, but the CPU's oneDNN and the
            GPU's tensor cores run convolutions faster that way (1.4x for an fp32 step on the 2-core CPU).
        compile_mode: ``torch.compile`` the network with this mode (``default``, ``max-autotune``, or
            ``reduce-overhead``: CUDA graphs, GPU only); ``none`` runs it eagerly.
    """

    def __init__(
        self,
        dropout: float = 0.0,
        regularization: Regularization = "none",
        reg_lambda: float = 1e-4,
        l1_ratio: float = 0.5,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        channels_last: bool = True,
        compile_mode: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none",
    ) -> None:
        super().__init__()
        if not 0 <= dropout < 1:
            raise ConfigError(f"--model.dropout must be in [0, 1), got {dropout}")
        if regularization not in get_args(Regularization):
            raise ConfigError(f"--model.regularization must be one of {', '.join(get_args(Regularization))}, got {regularization!r}")
        if reg_lambda < 0:
            raise ConfigError(f"--model.reg_lambda must be at least 0, got {reg_lambda}")
        if not 0 <= l1_ratio <= 1:
            raise ConfigError(f"--model.l1_ratio must be in [0, 1], got {l1_ratio}")
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"--model.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.save_hyperparameters()
        self.network = SeedCNN(num_classes=len(CLASSES), dropout=dropout)
        self.regularization, self.reg_lambda, self.l1_ratio = regularization, reg_lambda, l1_ratio
        self.label_smoothing = label_smoothing
        self.optimizer, self.scheduler = optimizer, scheduler
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network.to(memory_format=self.memory_format)
        self.compile_mode = compile_mode
        if compile_mode != "none":
            self.network.compile(mode=compile_mode)  # in place: the state_dict keys stay the plain ones
        self.train_metrics = stage_metrics(penalty=regularization != "none")
        self.val_metrics, self.test_metrics = stage_metrics(confusion=True), stage_metrics(confusion=True)
        self.confusion: dict[str, torch.Tensor] = {}  # the last epoch's confusion matrix per stage, for the dashboard

    def setup(self, stage: str) -> None:
        if self.compile_mode == "reduce-overhead" and self.trainer.strategy.root_device.type != "cuda":
            raise ConfigError("--model.compile_mode reduce-overhead uses CUDA graphs and needs a GPU: drop it on the CPU")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images.contiguous(memory_format=self.memory_format))

    def penalty(self) -> torch.Tensor | None:
        return penalty(penalized_weights(self.network), self.regularization, self.reg_lambda, self.l1_ratio)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.train_metrics["Loss"].update(loss.detach(), len(labels))
        self.train_metrics["Accuracy"].update(logits.detach(), labels)
        weight_penalty = self.penalty()
        if weight_penalty is None:
            return loss
        self.train_metrics["Penalty"].update(weight_penalty.detach())
        return loss + weight_penalty

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: nn.ModuleDict) -> None:
        images, labels = batch
        logits = self(images)
        metrics["Loss"].update(F.cross_entropy(logits, labels), len(labels))
        metrics["Accuracy"].update(logits, labels)
        metrics["Confusion"].update(logits, labels)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train", self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_metrics)

    def _log_epoch(self, stage: str, metrics: nn.ModuleDict) -> None:
        for name, metric in metrics.items():
            # compute() also gathers the counts of every process in multi-device runs.
            value = metric.compute()
            metric.reset()
            if name != "Confusion":
                self.log(f"{name}/{stage}", value, prog_bar=name == "Accuracy")
                continue
            self.confusion[stage] = value
            for class_name, accuracy in zip(CLASSES, value.diag() / value.sum(1).clamp(min=1)):
                self.log(f"ClassAccuracy/{stage}/{class_name}", accuracy)
        if stage != "test":
            # Lightning takes a logged "step" value as the x coordinate of the metrics logged with it:
            # the epoch, so the curves read per epoch as the seed drew them.
            self.log("step", float(self.current_epoch))

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        # LightningCLI hands the schedule over as a functools.partial of its class and arguments.
        if getattr(self.scheduler, "keywords", {}).get("total_steps", 0) is None:
            scheduler = self.scheduler(optimizer, total_steps=self.trainer.estimated_stepping_batches)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler(optimizer), "monitor": "Loss/val"}}


def stage_metrics(penalty: bool = False, confusion: bool = False) -> nn.ModuleDict:
    """One stage's loss, accuracy (penalty, confusion matrix), accumulated on the device and read once per epoch.

    One set per stage, never shared. Updated directly rather than through ``self.log`` every step,
    and without argument or NaN checks: each of those costs host work or a device sync per step.
    """
    metrics = {
        "Loss": MeanMetric(nan_strategy="disable"),
        "Accuracy": MulticlassAccuracy(num_classes=len(CLASSES), average="micro", validate_args=False),
    }
    if penalty:
        metrics["Penalty"] = MeanMetric(nan_strategy="disable")
    if confusion:  # rows: true class, columns: predicted class; per-class accuracy is its diagonal over row sums
        metrics["Confusion"] = MulticlassConfusionMatrix(num_classes=len(CLASSES), validate_args=False)
    return nn.ModuleDict(metrics)
