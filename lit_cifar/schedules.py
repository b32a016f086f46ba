"""Learning-rate schedules that torch does not ship in a form LightningCLI can configure."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lit_cifar.errors import ConfigError


class TriangularLR(LambdaLR):
    """airbench's schedule, stepped per batch: each group's learning rate times a factor that rises
    linearly from ``start_factor`` to 1 at ``peak`` (a fraction of the run), then falls linearly to
    ``end_factor`` at the last step.

    OneCycleLR with a linear anneal draws the same shape but sets one ``max_lr`` for every parameter
    group, where airbench trains the BatchNorm biases at 64x the rate of the other weights; a
    factor on each group's own rate keeps that. ``total_steps`` is filled in by the model from the
    Trainer's step count when left unset.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        start_factor: float = 0.2,
        peak: float = 0.23,
        end_factor: float = 0.07,
        last_epoch: int = -1,
    ) -> None:
        if not total_steps or total_steps < 1:
            raise ConfigError(
                f"TriangularLR needs --model.scheduler.total_steps of at least 1 (left unset, the model fills in the "
                f"run's step count), got {total_steps}"
            )
        if not 0 < peak < 1:
            raise ConfigError(f"--model.scheduler.peak is a fraction of the run in (0, 1), got {peak}")
        self.total_steps = total_steps  # saved with the schedule's state: a resumed run is checked against it
        peak_step = max(1, int(peak * total_steps))

        def factor(step: int) -> float:
            if step < peak_step:
                return start_factor + (1 - start_factor) * step / peak_step
            return 1 + (end_factor - 1) * min(1.0, (step - peak_step) / max(1, total_steps - peak_step))

        super().__init__(optimizer, factor, last_epoch)
