"""Reading a run's per-epoch scalars back from its TensorBoard event files, and drawing the seed's curves."""

from __future__ import annotations

from pathlib import Path

from lit_cifar.errors import UserError


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a run as [(step, value)], the last value kept where a step repeats."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder: pass a run folder such as lightning_logs/version_0")
    events = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})  # 0: keep every point
    events.Reload()
    tags = events.Tags()["scalars"]
    if not tags:
        raise UserError(f"{run_dir} holds no TensorBoard scalars: pass a run folder such as lightning_logs/version_0")
    return {tag: sorted({e.step: e.value for e in events.Scalars(tag)}.items()) for tag in tags}


def last(scalars: dict[str, list[tuple[int, float]]], tag: str, default: float = float("nan")) -> float:
    return scalars[tag][-1][1] if scalars.get(tag) else default


def plot_curves(runs: dict[str, dict[str, list[tuple[int, float]]]], out: Path) -> Path:
    """The seed's two panels, loss and accuracy per epoch, train (solid) against validation (dashed), one colour per run."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 5), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    colours = [f"C{i}" for i in range(10)]
    for (name, scalars), colour in zip(runs.items(), colours * len(runs)):
        for axes, quantity in ((loss_axes, "Loss"), (accuracy_axes, "Accuracy")):
            for stage, style in (("train", "-"), ("val", "--")):
                points = scalars.get(f"{quantity}/{stage}", [])
                if points:
                    epochs, values = zip(*points)
                    label = f"{name} {stage}" if len(runs) > 1 else {"train": "Train", "val": "Validation"}[stage]
                    axes.plot(epochs, values, style, color=colour, marker="o", markersize=3, label=label)
    for axes, quantity in ((loss_axes, "Loss"), (accuracy_axes, "Accuracy")):
        axes.set(xlabel="Epoch", ylabel=quantity, title=f"{quantity} over epochs")
        axes.legend(fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out
