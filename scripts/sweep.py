"""Run the studies of a sweep file on Optuna: `python scripts/sweep.py SWEEP.yaml [options] [any fit.py flag ...]`.

    python scripts/sweep.py configs/sweeps/regularization.yaml --data.data_dir DIR
    python scripts/sweep.py configs/sweeps/regularization.yaml --data.data_dir DIR &   # a second worker, same study
    python scripts/sweep.py configs/sweeps/fast_tpe.yaml --storage postgresql://user@host/db --data.data_dir DIR

Every flag this script does not know goes to each trial's fit.py (after the sweep file's own), so
--data.data_dir, --accelerator gpu or --trainer.default_root_dir work as they do for fit.py. Start the
same command again, in another terminal or on another machine with the same --storage, and the
workers share the trials; start it again after a crash and it runs what is left. The trials' runs are in
lightning_logs/sweeps/STUDY/trial_N (TensorBoard's HParams tab compares them); scripts/plot_sweep.py
draws the figures and tables. What a sweep file holds: lit_cifar/sweep.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lit_cifar.cli import one_line_errors, quiet_startup
from lit_cifar.errors import UserError
from lit_cifar.sweep import Worker, load_sweep, storage


def default_storage(fit_args: list[str]) -> str:
    """An SQLite file beside the trials' runs: lightning_logs/sweeps/optuna.db under --trainer.default_root_dir."""
    root = next((value for flag, value in zip(fit_args, fit_args[1:]) if flag == "--trainer.default_root_dir"), ".")
    return f"sqlite:///{Path(root) / 'lightning_logs' / 'sweeps' / 'optuna.db'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="a sweep file, e.g. configs/sweeps/regularization.yaml")
    parser.add_argument("--storage", help="an Optuna storage URL shared by the workers (default: an SQLite file "
                        "lightning_logs/sweeps/optuna.db; e.g. postgresql://user:password@host/db)")
    parser.add_argument("--studies", nargs="+", help="run only these studies of the file (default: all, in order)")
    parser.add_argument("--heartbeat_interval", type=int, default=10,
                        help="seconds between a running trial's heartbeats; a trial silent for twice as long is run again")
    args, fit_args = parser.parse_known_args()
    quiet_startup()
    # Lightning's start-up lines (devices, the model summary) once per trial; Optuna's line per trial says more.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    with one_line_errors(fit_args, "sweep.py"):
        specs = load_sweep(args.sweep)
        names = [spec.name for spec in specs]
        unknown = sorted(set(args.studies or []) - set(names))
        if unknown:
            raise UserError(f"--studies {unknown[0]}: no such study in {args.sweep}; it has {', '.join(names)}")
        if args.heartbeat_interval < 1:
            raise UserError(f"--heartbeat_interval must be at least 1, got {args.heartbeat_interval}")
        store = storage(args.storage or default_storage(fit_args), args.heartbeat_interval)
        for spec in specs:
            if args.studies and spec.name not in args.studies:
                continue
            print(f"study {spec.name}: {spec.size} trials", file=sys.stderr, flush=True)
            Worker(spec, store, fit_args, "lightning_logs/sweeps", args.heartbeat_interval).run()


if __name__ == "__main__":
    main()
