"""Print or save the likeliest CIFAR-10 classes of image files: LightningCLI's `predict` subcommand.

    python scripts/predict.py --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt cat.jpg photos/
    python scripts/predict.py --ckpt_path last --prediction.output predictions.csv photos/   # or .json
    python scripts/predict.py --ckpt_path last --prediction.top_k 5 --accelerator gpu photos/

Images of any size and format PIL reads are converted to RGB and resized to 32x32 (bilinear, aspect
ratio not kept), as the network only knows CIFAR-10's size; a folder stands for every file in it and
in its subfolders. They are read and classified in batches (--data.eval_batch_size). A file that is
not a readable image is named on stderr with why, the rest are still predicted, and the exit status
is then 1.
"""

import sys

from lit_cifar.cli import main
from lit_cifar.predict import PredictionWriter

if __name__ == "__main__":
    cli = main("predict")
    writer = next(callback for callback in cli.trainer.callbacks if isinstance(callback, PredictionWriter))
    sys.exit(1 if writer.skipped else 0)
