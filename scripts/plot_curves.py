"""Draw the seed's loss and accuracy curves (train against validation, per epoch) from runs' TensorBoard logs.

    python scripts/plot_curves.py lightning_logs/version_0 [lightning_logs/version_1 ...] [--out curves.png]

Several runs overlay in one figure, one colour per run, named by their folders.
"""

import argparse
import sys
from pathlib import Path

from lit_cifar.curves import plot_curves, read_scalars
from lit_cifar.errors import UserError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, e.g. lightning_logs/version_0")
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="the PNG to write (default: curves.png)")
    args = parser.parse_args()
    try:
        runs = {str(run): read_scalars(run) for run in args.runs}
    except UserError as err:
        sys.exit(f"error: {err}")
    print(plot_curves(runs, args.out))


if __name__ == "__main__":
    main()
