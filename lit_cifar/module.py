"""The LightningModule every recipe shares: a network trained on cross-entropy plus a weight penalty,
with accuracy metrics, what goes to TensorBoard, and the optimizer and schedule.

The speedrun's tricks live beside it (``lit_cifar.speedrun``, attached by ``configure_callbacks``;
test-time augmentation in ``lit_cifar.tta``), the CUDA-graph replay in ``lit_cifar.cuda_graph``.
"""

from __future__ import annotations

from functools import partial
from typing import Literal, get_args

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lit_cifar.cpu import configure_cpu_training
from lit_cifar.cuda_graph import GraphedTrainingStep
from lit_cifar.errors import ConfigError
from lit_cifar.networks import AirbenchNet, SeedCNN
from lit_cifar.regularization import Regularization, penalized_weights, penalty
from lit_cifar.sources import CLASSES
from lit_cifar.speedrun import Lookahead, Whitening, norm_bias_optimizer
from lit_cifar.tta import TestTimeAugmentation, tta_logits

configure_cpu_training()  # on import, before torch starts its worker threads

Network = Literal["seed_cnn", "airbench"]


class CIFARClassifier(L.LightningModule):
    """A CIFAR-10 network with the seed's training objective and what the seed logged.

    TensorBoard gets, once per epoch and with the epoch as x-axis as in the seed: ``Loss/train``,
    ``Accuracy/train``, ``Loss/val``, ``Accuracy/val`` (and ``Loss/test``, ``Accuracy/test``).
    ``Loss/*`` is the cross-entropy alone, so train and validation curves compare like with like;
    the penalty is logged apart as ``Penalty/train`` and the optimised objective is their sum.

    With ``tta`` on, validation and test also log ``Accuracy/val_tta`` and ``Accuracy/test_tta``: the
    accuracy of the logits averaged over the augmented copies of each image, beside the plain one.

    Args:
        network: ``seed_cnn`` (the seed's CNN) or ``airbench`` (airbench94's network: its whitening
            layer is set from the first 5,000 training images when fitting starts).
        dropout: Dropout probability before each linear layer of seed_cnn (the seed used none).
        regularization: Weight penalty added to the loss: none, l1 (lasso), l2 (ridge) or elastic_net.
        reg_lambda: Strength λ of the penalty.
        l1_ratio: Elastic net's share of L1: λ·(ratio·L1 + (1 − ratio)·L2).
        label_smoothing: Cross-entropy label smoothing for training (the seed used none); ``Loss/train`` is then
            the smoothed loss, and validation and test keep the plain cross-entropy.
        optimizer: Built from the parameters; the seed's Adam with lr 1e-3 by default.
        scheduler: Optional learning-rate schedule, stepped once per epoch (ReduceLROnPlateau watches Loss/val).
            A schedule whose ``total_steps`` is left unset (OneCycleLR) gets the run's number of optimizer
            steps from the Trainer and is stepped after every batch.
        channels_last: Keep activations in NHWC layout. Same arithmetic; the CPU's oneDNN and the GPU's
            tensor cores run convolutions faster that way (docs/benchmarks.md).
        compile_mode: ``torch.compile`` the network with this mode (``default``, ``max-autotune``, or
            ``reduce-overhead``: CUDA graphs, GPU only); ``none`` runs it eagerly.
        cuda_graph: GPU only: record each training step's forward and backward once as a CUDA graph and replay
            it (``lit_cifar.cuda_graph``): the same arithmetic with one launch instead of one per kernel, for
            networks too small to keep a GPU busy. The optimizer, schedules and gradient clipping run as usual;
            gradient accumulation and multi-device runs are refused.
        norm_bias_lr_scale: Learning rate of the BatchNorm biases relative to the other weights (airbench
            uses 64), with their weight decay divided by the same factor so the decay per step stays equal.
        whitening_bias_epochs: airbench only: epochs during which the whitening layer's bias trains;
            its filters never do.
        lookahead: airbench's weight averaging (``lit_cifar.speedrun.Lookahead``): every 5 optimizer steps
            the weights are replaced by an exponential moving average of themselves, whose memory grows
            from 0 to 0.95⁵ over the run, and the run ends on the average.
        tta: Test-time augmentation for validation and test (``lit_cifar.tta``): average the logits of each
            image with its mirror (``flip``), and also with two copies shifted by one pixel diagonally
            (``flip_translate``).
    """

    def __init__(
        self,
        network: Network = "seed_cnn",
        dropout: float = 0.0,
        regularization: Regularization = "none",
        reg_lambda: float = 1e-4,
        l1_ratio: float = 0.5,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        channels_last: bool = True,
        compile_mode: Literal["none", "default", "reduce-overhead", "max-autotune"] = "none",
        cuda_graph: bool = False,
        norm_bias_lr_scale: float = 1.0,
        whitening_bias_epochs: int = 3,
        lookahead: bool = False,
        tta: TestTimeAugmentation = "none",
    ) -> None:
        super().__init__()
        if network not in get_args(Network):
            raise ConfigError(f"--model.network must be one of {', '.join(get_args(Network))}, got {network!r}")
        if network != "seed_cnn" and dropout:
            raise ConfigError(
                f"--model.dropout applies to the seed_cnn network only ({network} has no dropout layers): leave it at 0"
            )
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
        if norm_bias_lr_scale <= 0:
            raise ConfigError(f"--model.norm_bias_lr_scale must be above 0, got {norm_bias_lr_scale}")
        if cuda_graph and compile_mode != "none":
            raise ConfigError(
                f"--model.cuda_graph and --model.compile_mode {compile_mode} have not been tried together: choose one"
            )
        self.save_hyperparameters()
        if network == "airbench":
            self.network: nn.Module = AirbenchNet(num_classes=len(CLASSES))
        else:
            self.network = SeedCNN(num_classes=len(CLASSES), dropout=dropout)
        self.regularization, self.reg_lambda, self.l1_ratio = regularization, reg_lambda, l1_ratio
        self.label_smoothing, self.tta = label_smoothing, tta
        self.optimizer, self.scheduler = optimizer, scheduler
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network.to(memory_format=self.memory_format)
        self.compile_mode = compile_mode
        if compile_mode != "none":
            self.network.compile(mode=compile_mode)  # in place: the state_dict keys stay the plain ones
        self.step_graph = GraphedTrainingStep(self.objective, self.network) if cuda_graph else None
        self.train_metrics = stage_metrics(penalty=regularization != "none")
        # Each training step's (per-image losses, predicted classes, labels[, penalty]), put into train_metrics
        # once per epoch: two torchmetrics updates per step are host work a small step notices.
        self.train_steps: list[tuple[torch.Tensor, ...]] = []
        self.val_metrics = stage_metrics(confusion=True, tta=tta != "none")
        self.test_metrics = stage_metrics(confusion=True, tta=tta != "none")
        self.confusion: dict[str, torch.Tensor] = {}  # the last epoch's confusion matrix per stage, for the dashboard

    def configure_callbacks(self) -> list[Callback]:
        """The speedrun's training tricks that these hyperparameters ask for."""
        callbacks: list[Callback] = []
        if isinstance(self.network, AirbenchNet):
            callbacks.append(Whitening(bias_epochs=self.hparams.whitening_bias_epochs))
        if self.hparams.lookahead:
            callbacks.append(Lookahead())
        return callbacks

    def setup(self, stage: str) -> None:
        if self.compile_mode == "reduce-overhead" and self.trainer.strategy.root_device.type != "cuda":
            raise ConfigError("--model.compile_mode reduce-overhead uses CUDA graphs and needs a GPU: drop it on the CPU")
        if self.step_graph is not None and stage == "fit":
            self.step_graph.check(self.trainer)

    def on_train_start(self) -> None:
        # A resumed run restores its per-step schedule with the length it was laid out for; trained longer or
        # shorter, torch would fail at that length's end (OneCycleLR) or the curve would not end where it should.
        for config in self.trainer.lr_scheduler_configs:
            planned, steps = getattr(config.scheduler, "total_steps", None), self.trainer.estimated_stepping_batches
            if config.interval == "step" and planned is not None and planned != steps:
                raise ConfigError(
                    f"the checkpoint's {type(config.scheduler).__name__} schedule was laid out for {planned} optimizer "
                    f"steps and this run has {steps} (--max_epochs, --trainer.max_steps or --data.batch_size changed): "
                    "a per-step schedule cannot be stretched; resume with the run's own length, or start a new run"
                )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images.contiguous(memory_format=self.memory_format))

    def penalty(self) -> torch.Tensor | None:
        return penalty(penalized_weights(self.network), self.regularization, self.reg_lambda, self.l1_ratio)

    def objective(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The training loss of a batch, and what the epoch's metrics keep of the step."""
        logits = self(images)
        losses = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing, reduction="none")
        loss = losses.mean()
        weight_penalty = self.penalty()
        kept = (losses.detach(), logits.detach().argmax(1), labels)
        if weight_penalty is None:
            return loss, kept
        return loss + weight_penalty, (*kept, weight_penalty.detach())

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        replayed = self.step_graph(*batch) if self.step_graph is not None else None
        loss, kept = replayed if replayed is not None else self.objective(*batch)
        self.train_steps.append(kept)
        return loss

    # A replayed CUDA graph has run this step's backward pass already, and written its gradients into
    # tensors of its own (lit_cifar.cuda_graph). Lightning calls these two hooks between the training
    # step and the optimizer step; no callback can skip them, so the module does.
    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        if self.step_graph is None:
            optimizer.zero_grad()
        elif not self.step_graph.replayed:  # an eager step: zeroed in place, the graph's gradient tensors stay
            optimizer.zero_grad(set_to_none=False)

    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        if self.step_graph is None or not self.step_graph.replayed:
            super().backward(loss, *args, **kwargs)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: nn.ModuleDict) -> None:
        images, labels = batch
        logits = self(images)
        metrics["Loss"].update(F.cross_entropy(logits, labels, reduction="none"))
        metrics["Accuracy"].update(logits, labels)
        metrics["Confusion"].update(logits, labels)  # the plain predictions, as Accuracy/*
        if self.tta != "none":
            metrics["AccuracyTTA"].update(tta_logits(self, images, self.tta, logits), labels)

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalised images, with the test-time augmentation chosen."""
        return tta_logits(self, images, self.tta)

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """Class probabilities (float32) for a batch whose first item is the normalised images
        (``lit_cifar.predict.ImageBatch``), with the test-time augmentation chosen."""
        return self.predict_logits(batch[0]).float().softmax(dim=1)

    def on_train_epoch_end(self) -> None:
        self._update_train_metrics()
        self._log_epoch("train", self.train_metrics)

    def _update_train_metrics(self) -> None:
        """The epoch's training steps into train_metrics, in one update per metric."""
        if not self.train_steps:
            return
        losses, predictions, labels, *penalties = zip(*self.train_steps)
        self.train_steps.clear()
        self.train_metrics["Loss"].update(torch.cat(losses))
        self.train_metrics["Accuracy"].update(torch.cat(predictions), torch.cat(labels))
        if penalties:
            self.train_metrics["Penalty"].update(torch.stack(penalties[0]))

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_metrics)

    def _log_epoch(self, stage: str, metrics: nn.ModuleDict) -> None:
        for name, metric in metrics.items():
            # compute() also gathers the counts of every process in multi-device runs.
            value = metric.compute()
            metric.reset()
            if name == "AccuracyTTA":
                self.log(f"Accuracy/{stage}_tta", value)
                continue
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
        optimizer = user_arguments("--model.optimizer", self.optimizer, norm_bias_optimizer, self.optimizer,
                                   self.network, self.hparams.norm_bias_lr_scale)
        if self.scheduler is None:
            return optimizer
        # LightningCLI hands the schedule over as a functools.partial of its class and arguments.
        per_step = getattr(self.scheduler, "keywords", {}).get("total_steps", 0) is None
        total_steps = self.trainer.estimated_stepping_batches if per_step else None
        schedule = partial(self.scheduler, total_steps=total_steps) if per_step else self.scheduler
        # Built and stepped on a copy first: some schedules take out-of-range arguments and fail at a later step.
        user_arguments("--model.scheduler", self.scheduler, first_steps, schedule, optimizer, min(2, total_steps or 2))
        scheduler = schedule(optimizer)
        if per_step:
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "Loss/val"}}


def user_arguments(flag: str, configured, build, *args):
    """``build(*args)``, with torch's refusal of an argument the user gave (``configured``: the class, or the
    partial of it LightningCLI makes) turned into a ConfigError that names the flag and the class."""
    try:
        return build(*args)
    except (ValueError, TypeError, ZeroDivisionError) as err:
        # jsonargparse's partial holds the class among its arguments; a plain class is its own name.
        cls = next((arg for arg in getattr(configured, "args", ()) if isinstance(arg, type)), configured)
        reason = f"an argument of 0 divides by zero at its first steps ({err})" if isinstance(err, ZeroDivisionError) else err
        raise ConfigError(
            f"{flag} {getattr(cls, '__name__', cls)} refused its arguments: {reason}; give --{flag[2:]}.* values in "
            "their valid range"
        ) from err


def first_steps(schedule, optimizer: torch.optim.Optimizer, steps: int) -> None:
    """Build ``schedule`` on a copy of ``optimizer`` (same class, groups and settings, one dummy parameter per
    group) and step both ``steps`` times, leaving the real optimizer untouched."""
    groups = [{**group, "params": [torch.zeros(1, requires_grad=True)]} for group in optimizer.param_groups]
    copy = type(optimizer)(groups, **optimizer.defaults)
    scheduler = schedule(copy)
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return  # stepped with a metric; its arguments are checked when it is built
    for _ in range(steps):
        copy.step()
        scheduler.step()


def untrained_classifier(hyperparameters: dict, model_class: type[CIFARClassifier] = CIFARClassifier) -> CIFARClassifier:
    """An untrained model with what of a checkpoint's hyperparameters shapes it or its predictions: the
    network and the test-time augmentation (the rest is training's). What checkpoints are checked against."""
    return model_class(network=hyperparameters.get("network", "seed_cnn"), tta=hyperparameters.get("tta", "none"))


def stage_metrics(penalty: bool = False, confusion: bool = False, tta: bool = False) -> nn.ModuleDict:
    """One stage's loss, accuracy (penalty, confusion matrix), accumulated on the device and read once per epoch.

    One set per stage, never shared. Updated directly rather than through ``self.log`` every step,
    and without argument or NaN checks: each of those costs host work or a device sync per step.
    The loss is given per image, so its mean is over images whatever the batch sizes: MeanMetric
    with ``nan_strategy="disable"`` drops the weights it is given (torchmetrics issue #3434).
    """
    metrics = {
        "Loss": MeanMetric(nan_strategy="disable"),
        "Accuracy": MulticlassAccuracy(num_classes=len(CLASSES), average="micro", validate_args=False),
    }
    if penalty:
        metrics["Penalty"] = MeanMetric(nan_strategy="disable")
    if tta:
        metrics["AccuracyTTA"] = MulticlassAccuracy(num_classes=len(CLASSES), average="micro", validate_args=False)
    if confusion:  # rows: true class, columns: predicted class; per-class accuracy is its diagonal over row sums
        metrics["Confusion"] = MulticlassConfusionMatrix(num_classes=len(CLASSES), validate_args=False)
    return nn.ModuleDict(metrics)
