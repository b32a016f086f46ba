"""Train the same recipe with each regularizer and compare what they did to fit, overfitting and the weights.

    python scripts/compare_regularization.py --data.data_dir DIR [--config configs/fast.yaml] [any fit.py flag ...]
    python scripts/compare_regularization.py --config configs/fast.yaml --data.data_dir DIR --data.train_per_class 100 --max_epochs 60

Runs none, l1, l2, elastic_net and dropout one after another with the same seed, data and budget
(every flag not listed below goes to scripts/fit.py unchanged; put the regularization strength in
--model.reg_lambda as usual). Each run logs to lightning_logs/compare_regularization/STAMP/N_MODE/;
the table (comparison.md) and the curves (comparison.png) are written beside them.

Own flags: --modes (a subset, in order), --dropout (the dropout mode's probability, default 0.5).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from lit_cifar.curves import last, plot_curves, read_scalars

FIT = Path(__file__).resolve().parent / "fit.py"
MODES = ("none", "l1", "l2", "elastic_net", "dropout")


def mode_flags(mode: str, dropout: float) -> list[str]:
    if mode == "dropout":
        return ["--model.regularization", "none", "--model.dropout", str(dropout)]
    return ["--model.regularization", mode, "--model.dropout", "0.0"]


def table(results: dict[str, dict]) -> str:
    lines = [
        "| mode | train accuracy | val accuracy | train − val gap | penalty | sparsity (share of weights under 1e-3) | weight L2 norm |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, scalars in results.items():
        train, val = last(scalars, "Accuracy/train"), last(scalars, "Accuracy/val")
        lines.append(
            f"| {mode} | {train:.2%} | {val:.2%} | {train - val:+.2%} | {last(scalars, 'Penalty/train', 0.0):.4f} "
            f"| {last(scalars, 'Sparsity/all'):.2%} | {last(scalars, 'WeightNorm/L2/all'):.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--dropout", type=float, default=0.5)
    args, fit_args = parser.parse_known_args()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"lightning_logs/compare_regularization/{stamp}"  # TensorBoardLogger's name, under its save_dir "."
    results = {}
    for index, mode in enumerate(args.modes):
        print(f"training {mode} ...", flush=True)
        version = f"{index}_{mode}"  # a bare "none" would read as null
        logger = ["--trainer.logger.init_args.name", name, "--trainer.logger.init_args.version", version]
        run = subprocess.run([sys.executable, str(FIT), *fit_args, *mode_flags(mode, args.dropout), *logger])
        if run.returncode != 0:
            sys.exit(run.returncode)
        results[mode] = read_scalars(Path(name) / version)
    out = Path(name)
    (out / "comparison.md").write_text(table(results))
    plot_curves(results, out / "comparison.png")
    print(table(results))
    print(f"written: {out / 'comparison.md'}, {out / 'comparison.png'}")


if __name__ == "__main__":
    main()
