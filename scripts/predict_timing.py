"""Time classifying a folder of image files: one image at a time against scripts/predict.py's batches.

    python scripts/predict_timing.py --ckpt_path CKPT --folder /path/to/cifar10/test   # its 10,000 JPEGs

Both read every file of the folder (subfolders included) with the same checkpoint in this process. One at a
time: each file read, normalised and put through the network as a batch of one, as a loop over files
would. Batched: LightningCLI's predict as scripts/predict.py runs it, writing a CSV, start-up of the
Trainer included (not Python's import). Prints images per second of each and the ratio
(docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from lit_cifar.augment import normalize
from lit_cifar.checkpoints import check_checkpoint
from lit_cifar.cli import main as cli_main
from lit_cifar.data import trained_normalization
from lit_cifar.module import untrained_classifier
from lit_cifar.predict import ImageFiles, find_images


@torch.no_grad()
def one_at_a_time(ckpt_path: Path, files: list[Path]) -> float:
    """Seconds to classify ``files`` one by one."""
    saved = check_checkpoint(ckpt_path, untrained_classifier)  # read and checked as predict.py does
    model = untrained_classifier(saved["hyper_parameters"])
    model.load_state_dict(saved["state_dict"])
    model.eval()
    normalization = trained_normalization(saved) or "seed"
    start = time.perf_counter()
    for image, _, error in ImageFiles(files):  # read as predict.py reads them; what is no image is skipped
        if not error:
            model.predict_step((normalize(image[None], normalization),), 0).argmax()
    return time.perf_counter() - start


def batched(ckpt_path: Path, folder: Path, extra: list[str]) -> float:
    """Seconds for scripts/predict.py's work on ``folder``."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        cli_main("predict", ["--ckpt_path", str(ckpt_path), "--prediction.output", f"{out}/p.csv", *extra, str(folder)])
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--folder", type=Path, required=True, help="a folder of image files (subfolders included)")
    parser.add_argument("--extra_args", nargs=argparse.REMAINDER, default=[], help="more predict.py flags, last")
    args = parser.parse_args()
    files = find_images([args.folder])[0]
    batch_seconds = batched(args.ckpt_path, args.folder, args.extra_args)
    single_seconds = one_at_a_time(args.ckpt_path, files)
    print(f"{len(files)} images, {torch.get_num_threads()} threads")
    print(f"one at a time: {single_seconds:.1f} s ({len(files) / single_seconds:.0f} images/s)")
    print(f"predict.py's batches: {batch_seconds:.1f} s ({len(files) / batch_seconds:.0f} images/s)")
    print(f"batched / one at a time: {single_seconds / batch_seconds:.1f}x")


if __name__ == "__main__":
    main()
