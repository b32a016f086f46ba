"""``--model.cuda_graph`` and ``--data.augment_cuda_graph``: replayed steps train as eager ones do, with
what the Trainer adds, and a replayed augmentation draws new random parameters.

The tests marked ``gpu`` are skipped without a GPU (CI has none); run them on a GPU machine with
``LIT_CIFAR_GPU_TESTS=1 python -m pytest -m gpu``. The one CPU test checks the module's side of the
contract with an eager stand-in for the graph; the refusals on the CPU are in test_training.py.
"""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from lit_cifar.cli import CifarCLI
from lit_cifar.cuda_graph import GraphedFunction, GraphedTrainingStep
from lit_cifar.data import CIFAR10DataModule
from conftest import LossHistory
from lit_cifar.module import CIFARClassifier

SPEEDRUN = Path(__file__).resolve().parents[1] / "configs" / "speedrun.yaml"


def gpu(test):
    """Marked ``gpu`` (selected by ``-m gpu``) and skipped where there is none."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")(test))


def fit(data_dir: Path, *args: str, callbacks: tuple[Callback, ...] = (), accelerator: str = "gpu") -> CifarCLI:
    """Two epochs of the 50 training images left beside 10 for validation: in batches of 16, three
    steps the graph replays and one of 2 images that runs eagerly, per epoch."""
    cli = CifarCLI(
        args=[
            "--data.data_dir", str(data_dir), "--data.val_size", "10", "--data.batch_size", "16",
            "--max_epochs", "2", "--accelerator", accelerator, "--devices", "1", "--trainer.logger", "false",
            "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.num_sanity_val_steps", "0", *args,
        ],
        run=False,
    )
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli


def count_replays(monkeypatch, graph_class: type[GraphedTrainingStep]) -> list[int]:
    """The number of images of every training step ``graph_class`` replays from here on."""
    counted: list[int] = []
    replay = graph_class._replay

    def counting(self) -> None:
        counted.append(len(self.images))
        replay(self)

    monkeypatch.setattr(graph_class, "_replay", counting)
    return counted


@pytest.fixture
def replays(monkeypatch) -> list[int]:
    return count_replays(monkeypatch, GraphedTrainingStep)


def assert_same_weights(a: CIFARClassifier, b: CIFARClassifier) -> None:
    for (name, expected), actual in zip(a.network.state_dict().items(), b.network.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-4, msg=name)


class EagerRecording(GraphedTrainingStep):
    """GraphedTrainingStep with the CUDA graph's work done eagerly into the same fixed tensors, and
    allowed on the CPU: all the rest of it (which batches replay, its gradients kept as ``.grad``,
    copies of its outputs) runs as on a GPU, so the CPU can check how it and the module and the
    Trainer work together."""

    @staticmethod
    def check(trainer) -> None:
        pass

    def _record(self, images, labels, trained) -> None:
        self.graph, self.images, self.labels, self.trained = "recorded", images.clone(), labels.clone(), trained
        self.gradients = [torch.zeros_like(p) if p.requires_grad else None for p in self.parameters]

    def _replay(self) -> None:
        loss, self.kept = self.objective(self.images, self.labels)
        trained = [(p, g) for p, g in zip(self.parameters, self.gradients) if g is not None]
        for (_, gradient), new in zip(trained, torch.autograd.grad(loss, [p for p, _ in trained])):
            gradient.copy_(new)
        self.loss = loss.detach()


def test_the_module_trains_a_replayed_step_as_an_eager_one(learnable_data_dir, monkeypatch):
    """On the CPU: Lightning's zero_grad and backward are skipped for replayed steps and run in place
    for the rest, and the gradients set to None before each validation come back, so the weights come
    out bit for bit as without a graph."""
    replays = count_replays(monkeypatch, EagerRecording)
    eager = fit(learnable_data_dir, accelerator="cpu")
    assert replays == []
    monkeypatch.setattr("lit_cifar.module.GraphedTrainingStep", EagerRecording)
    replayed = fit(learnable_data_dir, "--model.cuda_graph", "true", accelerator="cpu")
    assert replays == [16] * 6  # three full batches per epoch replayed, the short fourth one eager
    for (name, expected), actual in zip(eager.model.network.state_dict().items(), replayed.model.network.state_dict().values()):
        assert torch.equal(actual, expected), name
    for metric in ("Loss/train", "Accuracy/train", "Loss/val"):
        assert torch.equal(replayed.trainer.callback_metrics[metric], eager.trainer.callback_metrics[metric])
    assert replayed.trainer.global_step == eager.trainer.global_step == 8


@gpu
@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--model.regularization", "elastic_net", "--model.label_smoothing", "0.1"],
        ["--model.scheduler", "OneCycleLR", "--model.scheduler.max_lr", "0.004", "--trainer.gradient_clip_val", "0.5"],
    ],
    ids=lambda args: " ".join(args) or "defaults",
)
def test_replayed_steps_train_as_eager_steps_do(learnable_data_dir, args, replays):
    # The same seed, so the same data order and augmentation: only the way each step runs differs. SGD, as
    # Adam turns the GPU's nondeterministic last bits of a near-zero gradient into whole steps of size lr.
    sgd = ["--model.optimizer", "SGD", "--model.optimizer.lr", "0.05", "--model.optimizer.momentum", "0.9"]
    eager = fit(learnable_data_dir, *sgd, *args)
    graphed = fit(learnable_data_dir, "--model.cuda_graph", "true", *sgd, *args)
    assert replays == [16] * 6
    assert_same_weights(eager.model, graphed.model)
    for metric in ("Loss/train", "Accuracy/train", "Loss/val"):
        torch.testing.assert_close(graphed.trainer.callback_metrics[metric], eager.trainer.callback_metrics[metric],
                                   rtol=1e-3, atol=1e-4)
    assert graphed.trainer.global_step == eager.trainer.global_step == 8


@gpu
def test_bf16_replayed_steps_lower_the_loss(learnable_data_dir):
    history = LossHistory()
    fit(learnable_data_dir, "--model.cuda_graph", "true", "--precision", "bf16-mixed", "--max_epochs", "6",
        callbacks=(history,))
    losses = history.losses
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.75 * losses[0], losses


@gpu
def test_freezing_a_parameter_records_the_graph_anew(learnable_data_dir):
    """airbench's whitening bias trains for the first epoch only here: the graph recorded with it
    must not keep writing its gradient afterwards."""
    biases = {}

    class WhiteningBias(Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            biases[trainer.current_epoch] = module.network.whiten.bias.detach().clone()

        def on_train_end(self, trainer, module) -> None:
            biases["end"] = module.network.whiten.bias.detach().clone()

    fit(learnable_data_dir, "--config", str(SPEEDRUN), "--data.batch_size", "16", "--trainer.max_steps", "-1",
        "--model.tta", "none", "--model.lookahead", "false", "--model.whitening_bias_epochs", "1",
        "--model.cuda_graph", "true", callbacks=(WhiteningBias(),))
    assert not torch.equal(biases[0], biases[1])
    assert torch.equal(biases[1], biases["end"])


@gpu
@pytest.mark.parametrize("augmentation", ["seed", "crop_flip"])
def test_a_replayed_augmentation_draws_new_parameters_per_image_and_replay(augmentation):
    """One image 64 times over: a replay that froze its random numbers would give the same batch twice."""
    data = CIFAR10DataModule(augmentation=augmentation, augment_cuda_graph=True)
    graphed = GraphedFunction(data.training_batch)
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, device="cuda").expand(64, -1, -1, -1)
    first, second = graphed(images, 0), graphed(images, 0)
    assert first.shape == (64, 3, 32, 32) and first.dtype == torch.float32
    assert not torch.equal(first, second)
    assert len({tuple(image.flatten()[:200].tolist()) for image in first}) > 8  # parameters drawn per image
    eager = data.training_batch(images, 0)  # and the same values: the same sets of pixels, normalised alike
    torch.testing.assert_close(first.mean(), eager.mean(), atol=0.05, rtol=0)
    assert graphed(images[:5], 0).shape == (5, 3, 32, 32)  # another shape runs eagerly


@gpu
def test_both_graphs_train(learnable_data_dir, replays):
    history = LossHistory()
    cli = fit(learnable_data_dir, "--model.cuda_graph", "true", "--data.augment_cuda_graph", "true", "--max_epochs", "6",
              callbacks=(history,))
    losses = history.losses
    assert cli.datamodule.graphed_training_batch.graph is not None and len(replays) == 18
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.75 * losses[0], losses
