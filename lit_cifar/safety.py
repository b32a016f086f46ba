"""The logger's import path before ``lit_cifar.logger`` existed.

Every run's saved ``config.yaml`` names its logger by class path; those written before the logger moved
say ``lit_cifar.safety.TensorBoardLogger``, and passing them back with ``--config`` must keep working.
"""

from lit_cifar.logger import TensorBoardLogger

__all__ = ["TensorBoardLogger"]
