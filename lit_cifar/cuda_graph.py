"""Work recorded once as a CUDA graph and replayed (``--model.cuda_graph``, ``--data.augment_cuda_graph``).

On a GPU the seed's small CNN at batch 32 is bound by the host, not the GPU: each kernel of a
training step costs a launch of Python and driver work longer than the kernel itself. A CUDA graph
records the launches once and replays them with one call. Two are recorded, each by its owner:
the data module's augmentation of a batch (``GraphedFunction``) and the module's forward and
backward (``GraphedTrainingStep``). The latter writes the gradients into tensors it owns and keeps
them as the parameters' ``.grad``; everything after, the optimizer step, gradient clipping,
schedulers, Lightning's hooks, runs eagerly as usual.

A graph replays fixed shapes and fixed memory: a smaller batch (an epoch's shorter last batch) runs
eagerly, a step's gradients added into the same tensors after they are zeroed in place; a larger one
(a run resumed at an epoch's last batch), a change of image size (``--data.train_sizes``), or a change
of which parameters train (airbench's whitening bias), records the graph anew. The recipe follows PyTorch's "whole network capture"
(docs of ``torch.cuda.graph``): a warm-up on a side stream first, autocast's weight cache off while
recording. Random numbers drawn on the GPU inside a graph are new at every replay (PyTorch
advances the generator's offset per replay); numbers drawn on the host would be frozen into it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from torch import nn

from lit_cifar.errors import ConfigError

# Passes on a side stream before recording, as PyTorch's CUDA-graph docs do,
# so lazily created library state (cuBLAS and cuDNN workspaces) exists before the capture.
WARMUP_PASSES = 2


class GraphedFunction:
    """``function(batch, key)`` of a tensor batch, without autograd, replayed from a CUDA graph.

    ``key`` is what the function reads from Python besides the batch (the epoch, for airbench's
    alternating flip): a recording freezes it, so a new key records anew. Returns a copy of the
    graph's output, which the next replay overwrites.
    """

    def __init__(self, function: Callable[[torch.Tensor, object], torch.Tensor]) -> None:
        self.function = function
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: object = None

    def __call__(self, batch: torch.Tensor, key: object = None) -> torch.Tensor:
        if self.graph is None or key != self.key or len(batch) > len(self.batch):
            self._record(batch, key)
        if batch.shape != self.batch.shape:
            return self.function(batch, key)
        self.batch.copy_(batch)
        self.graph.replay()
        return self.output.clone()

    def _record(self, batch: torch.Tensor, key: object) -> None:
        self.graph = None  # an earlier graph's memory goes back before the new one is recorded
        self.batch, self.key = batch.clone(), key
        with _on_side_stream():
            for _ in range(WARMUP_PASSES):  # also fills the function's caches of constant tensors
                self.function(self.batch, key)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = self.function(self.batch, key)


Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, tuple[torch.Tensor, ...]]]


class GraphedTrainingStep:
    """Runs ``objective(images, labels)`` and its backward pass as a CUDA graph.

    ``objective`` returns (loss, tensors kept of the step), and so does a replay, with copies of the
    graph's outputs: the next replay overwrites the originals. The first call records the graph.
    """

    def __init__(self, objective: Objective, module: nn.Module) -> None:
        self.objective, self.module = objective, module
        # Listed at the first step, on the training device, rather than walking the module every step.
        self.parameters: list[nn.Parameter] = []
        self.graph: torch.cuda.CUDAGraph | None = None
        self.trained: tuple[bool, ...] = ()  # which parameters required gradients when the graph was recorded
        self.gradients: list[torch.Tensor | None] = []  # the tensors the graph writes them into
        self.replayed = False  # whether the last step ran from the graph (its backward pass included)

    @staticmethod
    def check(trainer) -> None:
        """Refuse, naming the flag, a run the graph cannot train: off a GPU, on several devices, accumulating."""
        if trainer.strategy.root_device.type != "cuda":
            raise ConfigError("--model.cuda_graph needs a GPU (--accelerator gpu): drop it on the CPU")
        if trainer.world_size > 1:
            raise ConfigError("--model.cuda_graph runs on one device: drop it for multi-device (DDP) runs")
        if trainer.accumulate_grad_batches > 1:
            raise ConfigError(
                "--model.cuda_graph writes each step's gradients afresh, so it cannot accumulate them: "
                "drop --trainer.accumulate_grad_batches or --model.cuda_graph"
            )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None:
        """The replayed step's (loss, kept tensors), its gradients in the parameters' ``.grad``; None for a batch
        the graph cannot take, which the caller then trains eagerly."""
        if self.graph is None:  # the parameters as training starts, on its device
            self.parameters = list(self.module.parameters())
        trained = tuple(p.requires_grad for p in self.parameters)
        if self.graph is None or trained != self.trained or len(images) > len(self.images) or images.shape[1:] != self.images.shape[1:]:
            self._record(images, labels, trained)
        # Put back what anyone set to None since (Lightning's on_validation_model_zero_grad does before each
        # validation): the graph writes these tensors, and an eager step must add into them too.
        for parameter, gradient in zip(self.parameters, self.gradients):
            if parameter.grad is not gradient:
                parameter.grad = gradient
        self.replayed = images.shape == self.images.shape and labels.shape == self.labels.shape
        if not self.replayed:
            return None
        self.images.copy_(images)
        self.labels.copy_(labels)
        self._replay()
        return self.loss.clone(), tuple(t.clone() for t in self.kept)

    def _replay(self) -> None:
        self.graph.replay()

    def _record(self, images: torch.Tensor, labels: torch.Tensor, trained: tuple[bool, ...]) -> None:
        self.graph = None  # an earlier graph's memory goes back before the new one is recorded
        self.images, self.labels, self.trained = images.clone(), labels.clone(), trained
        # The warm-up's forward passes would move BatchNorm's running statistics: put them back after.
        buffers = [(buffer, buffer.clone()) for buffer in self.module.buffers()]
        with _on_side_stream(), _autocast_without_cache():
            for _ in range(WARMUP_PASSES):
                self.objective(self.images, self.labels)[0].backward()
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for parameter in self.parameters:
            parameter.grad = None  # so the recorded backward allocates them in the graph's own memory
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), _autocast_without_cache():
            loss, self.kept = self.objective(self.images, self.labels)
            loss.backward()
        self.loss = loss.detach()
        self.gradients = [parameter.grad for parameter in self.parameters]


@functools.cache
def _side_stream(device: int) -> torch.cuda.Stream:
    """One per device, reused by every recording: cuBLAS keeps a workspace for each stream it has run on,
    so a new stream per recording held more GPU memory every epoch (docs/benchmarks.md)."""
    return torch.cuda.Stream(device)


@contextlib.contextmanager
def _on_side_stream() -> Iterator[None]:
    """Work on a stream of its own, ordered after the current stream's work and before its next."""
    side_stream = _side_stream(torch.cuda.current_device())
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        yield
    torch.cuda.current_stream().wait_stream(side_stream)


def _autocast_without_cache() -> torch.autocast:
    """The autocast in force (Lightning's, for bf16-mixed), with the cache of cast weights off: a cached
    cast made while recording would be freed when autocast exits, under the graph's feet."""
    return torch.autocast(
        "cuda",
        dtype=torch.get_autocast_dtype("cuda"),
        enabled=torch.is_autocast_enabled("cuda"),
        cache_enabled=False,
    )
