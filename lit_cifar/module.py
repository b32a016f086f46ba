"""The LightningModule: the seed's CNN trained on cross-entropy plus a weight penalty, with accuracy metrics."""

from __future__ import annotations

from typing import get_args

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics.classification import MulticlassAccuracy

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
        optimizer: Built from the parameters; the seed's Adam with lr 1e-3 by default.
        scheduler: Optional learning-rate schedule, stepped once per epoch (ReduceLROnPlateau watches Loss/val).
    """

    def __init__(
        self,
        dropout: float = 0.0,
        regularization: Regularization = "none",
        reg_lambda: float = 1e-4,
        l1_ratio: float = 0.5,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
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
        self.save_hyperparameters()
        self.network = SeedCNN(num_classes=len(CLASSES), dropout=dropout)
        self.regularization, self.reg_lambda, self.l1_ratio = regularization, reg_lambda, l1_ratio
        self.optimizer, self.scheduler = optimizer, scheduler
        # One metric object per stage: sharing one would mix their running counts.
        self.train_accuracy, self.val_accuracy, self.test_accuracy = (
            MulticlassAccuracy(num_classes=len(CLASSES), average="micro") for _ in range(3)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    def penalty(self) -> torch.Tensor | None:
        return penalty(penalized_weights(self.network), self.regularization, self.reg_lambda, self.l1_ratio)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        self.train_accuracy(logits, labels)
        self.log("Loss/train", loss, on_step=False, on_epoch=True, batch_size=len(labels))
        self.log("Accuracy/train", self.train_accuracy, on_step=False, on_epoch=True, prog_bar=True)
        weight_penalty = self.penalty()
        if weight_penalty is None:
            return loss
        self.log("Penalty/train", weight_penalty, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss + weight_penalty

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_accuracy)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_accuracy)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, accuracy: MulticlassAccuracy) -> None:
        images, labels = batch
        logits = self(images)
        accuracy(logits, labels)
        self.log(f"Loss/{stage}", F.cross_entropy(logits, labels), batch_size=len(labels))
        self.log(f"Accuracy/{stage}", accuracy, prog_bar=True)

    # Lightning takes a logged "step" value as the x coordinate of the metrics logged with it:
    # the epoch, so the curves read per epoch as the seed drew them.
    def on_train_epoch_end(self) -> None:
        self.log("step", float(self.current_epoch))

    def on_validation_epoch_end(self) -> None:
        self.log("step", float(self.current_epoch))

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler(optimizer), "monitor": "Loss/val"}}
