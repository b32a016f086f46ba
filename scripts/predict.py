"""Print the top-3 CIFAR-10 classes, with probabilities, for image files.

    python scripts/predict.py --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt cat.jpg photos/

Images of any size and PIL-readable format are converted to RGB and resized to 32x32 (bilinear,
aspect ratio not kept), as the network only knows CIFAR-10's size. A folder stands for the images
in it. A file that cannot be read gets its own error line; the rest are still predicted, and the
exit status is 1 if any failed.
"""

import argparse
import sys
from pathlib import Path

from lit_cifar.errors import UserError
from lit_cifar.predict import class_probabilities, image_files, load_classifier, read_image, top_classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint written by scripts/fit.py")
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders of them")
    args = parser.parse_args()
    try:
        classifier = load_classifier(args.ckpt_path)
    except UserError as err:
        sys.exit(f"error: {err}")
    failed = False
    for path in image_files(args.images):
        try:
            top = top_classes(class_probabilities(classifier, read_image(path)))
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
            continue
        print(f"{path}: " + ", ".join(f"{name} {probability:.1%}" for name, probability in top))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
