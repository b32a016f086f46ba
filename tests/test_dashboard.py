"""What a run leaves for TensorBoard and for the scripts that read it back: curves and the comparison."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import tiny_split, write_python_dir
from lit_cifar.callbacks import ConfusionFigure
from lit_cifar.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data.val_size", "10", "--data.batch_size", "16", "--data.download", "false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """One short L1-regularized run in a folder of its own: (its data_dir, its run folder)."""
    root = tmp_path_factory.mktemp("dashboard")
    data_dir = write_python_dir(root / "data", tiny_split(6, seed=1) + tiny_split(2, seed=2))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        main("fit", ["--data.data_dir", str(data_dir), "--max_epochs", "2", "--model.regularization", "l1", *TINY])
    return data_dir, root / "lightning_logs" / "version_0"


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_hparams_tab_names_the_hyperparameters_and_the_final_metrics(trained):
    content = events(trained[1]).PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    hparams = {info.name for info in experiment.hparam_infos}
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert {"model/regularization", "model/reg_lambda", "model/optimizer/init_args/lr", "data/batch_size"} <= hparams
    assert {"Accuracy/val", "Loss/val", "Accuracy/test"} <= metrics and "hp_metric" not in metrics
    # What runs differ in comes first (TensorBoard keeps this order), what they share after it, sorted.
    order = [info.name for info in experiment.hparam_infos]
    assert order[:4] == ["model/regularization", "model/reg_lambda", "model/l1_ratio", "model/dropout"]
    assert order.index("model/optimizer/init_args/lr") < order.index("data/augment_cuda_graph")
    rest = order[order.index("model/tta") + 1:]
    assert rest == sorted(rest) and "data/download" in rest


def test_custom_scalars_tab_draws_train_against_validation_as_the_seed_did(trained):
    (written,) = events(trained[1]).Tensors("custom_scalars__config__")  # once per run
    layout = layout_pb2.Layout.FromString(written.tensor_proto.string_val[0])
    (category,) = layout.category
    charts = {chart.title: list(chart.multiline.tag) for chart in category.chart}
    assert charts == {"Loss: train vs val": ["Loss/train", "Loss/val"],
                      "Accuracy: train vs val": ["Accuracy/train", "Accuracy/val"]}


def test_dashboard_images_histograms_and_scalars(trained):
    run = events(trained[1])
    tags = run.Tags()
    assert len(run.Images("ConfusionMatrix/val")) == 2  # every validation epoch, not the sanity check
    assert len(run.Images("Augmented training images")) == 1  # once per run
    assert {"Weights/network.conv1.weight", "Weights/network.fc2.weight"} <= set(tags["histograms"])
    assert not any("bias" in tag for tag in tags["histograms"])
    for tag in ("ClassAccuracy/val/cat", "WeightNorm/L1/all", "WeightNorm/L2/network.fc1.weight", "Sparsity/all",
                "Penalty/train", "LearningRate"):
        assert tag in tags["scalars"], tag
    assert "hp_metric" not in tags["scalars"] and not any(tag.startswith("lr-") for tag in tags["scalars"])
    for tag in ("Sparsity/all", "LearningRate"):
        assert [e.step for e in run.Scalars(tag)] == [0, 1], tag  # per epoch, the epoch as x-axis
    assert [e.value for e in run.Scalars("LearningRate")] == pytest.approx([1e-3, 1e-3])  # the seed's Adam


def test_weight_statistics_are_those_of_the_weights_at_the_epochs_end(trained):
    # The last epoch's figures against the weights of the last checkpoint, written at the same moment.
    state = torch.load(trained[1] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    weights = {name: tensor for name, tensor in state.items() if tensor.ndim >= 2}
    flat = torch.cat([w.flatten() for w in weights.values()])
    run = events(trained[1])
    logged = {tag: run.Scalars(tag)[-1].value for tag in run.Tags()["scalars"]}
    assert logged["Sparsity/all"] == pytest.approx((flat.abs() < 1e-3).float().mean().item(), abs=1e-6)
    assert 0 < logged["Sparsity/all"] < 0.5  # the share of weights near zero, not of the others
    assert logged["WeightNorm/L1/all"] == pytest.approx(flat.abs().sum().item(), rel=1e-5)
    assert logged["WeightNorm/L2/network.fc1.weight"] == pytest.approx(weights["network.fc1.weight"].norm().item(), rel=1e-5)
    assert logged["Sparsity/network.conv1.weight"] == pytest.approx(
        (weights["network.conv1.weight"].abs() < 1e-3).float().mean().item(), abs=1e-6)


def test_confusion_figure_redrawn_for_a_new_epoch_equals_a_fresh_one():
    matrices = torch.randint(0, 500, (2, 10, 10), generator=torch.Generator().manual_seed(0))
    reused = ConfusionFigure()
    reused.draw(matrices[0], "val, epoch 0")
    redrawn = reused.draw(matrices[1], "val, epoch 1")
    fresh = ConfusionFigure().draw(matrices[1], "val, epoch 1")
    assert redrawn.shape == (3, 600, 700) and redrawn.dtype == np.uint8
    assert np.array_equal(redrawn, fresh)  # nothing of the first epoch's numbers or title is left


def test_plot_curves_writes_a_png_for_one_and_for_two_runs(trained, tmp_path):
    for runs in ([trained[1]], [trained[1], trained[1]]):
        out = tmp_path / f"curves{len(runs)}.png"
        script = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "plot_curves.py"), *map(str, runs), "--out", str(out)],
            capture_output=True, text=True,
        )
        assert script.returncode == 0, script.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_plot_curves_names_a_folder_without_runs(tmp_path):
    script = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot_curves.py"), str(tmp_path)], capture_output=True, text=True
    )
    assert script.returncode == 1 and f"{tmp_path} holds no TensorBoard scalars" in script.stderr


def test_compare_regularization_writes_a_row_per_mode(trained, tmp_path):
    script = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compare_regularization.py"), "--data.data_dir", str(trained[0]),
         "--max_epochs", "1", "--trainer.enable_progress_bar", "false", *TINY],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert script.returncode == 0, script.stderr
    (folder,) = (tmp_path / "lightning_logs" / "compare_regularization").iterdir()
    rows = (folder / "comparison.md").read_text().splitlines()[2:]
    assert [row.split("|")[1].strip() for row in rows] == ["none", "l1", "l2", "elastic_net", "dropout"]
    assert (folder / "comparison.png").stat().st_size > 10_000
