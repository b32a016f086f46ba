"""Figures and tables of a sweep: `python scripts/plot_sweep.py SWEEP.yaml [--storage URL] [--out DIR]`.

    python scripts/plot_sweep.py configs/sweeps/regularization.yaml

Reads the finished trials of the sweep file's studies from the storage scripts/sweep.py wrote (the
same default), and writes each of the file's `reports:` as NAME.png and NAME.md into --out
(default: lightning_logs/sweeps/; no figure where the report says `figure: false`), printing the
tables. What a report holds: lit_cifar/sweep_report.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna
import yaml

from lit_cifar.cli import one_line_errors
from lit_cifar.errors import UserError
from lit_cifar.sweep import load_sweep
from lit_cifar.sweep_report import load_reports, markdown_table, plot, trial_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="the sweep file scripts/sweep.py ran")
    parser.add_argument("--storage", default="sqlite:///lightning_logs/sweeps/optuna.db", help="its Optuna storage URL")
    parser.add_argument("--out", type=Path, default=Path("lightning_logs/sweeps"), help="where the figures and tables go")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with one_line_errors([], "plot_sweep.py"):
        load_sweep(args.sweep)  # the same checks as scripts/sweep.py
        reports = load_reports(yaml.safe_load(args.sweep.read_text()), args.sweep)
        if not reports:
            raise UserError(f"sweep file {args.sweep} has no `reports:` to draw")
        for report in reports:
            rows = trial_rows(args.storage, report.studies)
            table = markdown_table(report, rows)
            (args.out / f"{report.name}.md").parent.mkdir(parents=True, exist_ok=True)
            (args.out / f"{report.name}.md").write_text(table)
            figure = plot(report, rows, args.out / f"{report.name}.png") if report.figure else None
            print(f"## {report.name} ({len(rows)} runs){f': {figure}' if figure else ''}\n\n{table}")


if __name__ == "__main__":
    main()
