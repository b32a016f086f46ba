"""Export a trained checkpoint to one file that runs without this project: ONNX, TorchScript or torch.export.

    python scripts/export.py --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --format onnx
    python scripts/export.py --ckpt_path last --format exported_program --output model.pt2 --tta none
    python scripts/export.py --ckpt_path last --format onnx --test_data /path/to/cifar10   # its test accuracy

The file takes N×3×32×32 RGB images, uint8 0–255 (or with --input float, float32 0–1), and gives N×10
logits in the order airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck; the
normalisation the run trained with and the test-time augmentation are inside (lit_cifar/export.py,
the README's section on exporting). An ONNX file is checked against PyTorch with ONNX Runtime
once written; ONNX needs
`pip install -e '.[export]'`. --ckpt_path last and best name a checkpoint of the newest run under
lightning_logs/, as for test.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import get_args

import torch

from lit_cifar.cli import one_line_errors, quiet_startup
from lit_cifar.errors import UserError
from lit_cifar.export import SUFFIXES, Format, InputType, accuracy_of, example_images, export, exportable, load_exported
from lit_cifar.resume import checkpoint_argument
from lit_cifar.sources import load, prepare
from lit_cifar.tta import TestTimeAugmentation

# ONNX Runtime's logits against PyTorch's, float32 both: the same arithmetic in another order.
ONNX_TOLERANCE = 1e-4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint a run wrote, or last / best (under lightning_logs/)")
    parser.add_argument("--format", required=True, choices=get_args(Format))
    parser.add_argument("--output", type=Path, help="the file to write (default: the checkpoint's path with "
                        + ", ".join(f"{suffix} for {name}" for name, suffix in SUFFIXES.items()) + ")")
    parser.add_argument("--tta", choices=get_args(TestTimeAugmentation), help="test-time augmentation inside the "
                        "graph (default: the checkpoint's --model.tta)")
    parser.add_argument("--input", dest="input_type", default="uint8", choices=get_args(InputType),
                        help="the input's type: uint8 0-255 (default) or float 0-1")
    parser.add_argument("--test_data", type=Path, help="a CIFAR-10 folder: print the exported file's accuracy on its test split")
    args = parser.parse_args()
    quiet_startup()
    with one_line_errors(sys.argv[1:], "export.py"):
        ckpt_path, why = checkpoint_argument(args.ckpt_path)
        if why:
            print(f"Exporting {ckpt_path} ({why})", file=sys.stderr)
        output = args.output or ckpt_path.with_suffix(SUFFIXES[args.format])
        if output.resolve() == ckpt_path.resolve():
            raise UserError(f"--output {output} is the checkpoint itself: give another file")
        model = exportable(ckpt_path, args.tta, args.input_type)
        if args.test_data is not None:
            prepare(args.test_data, download=False)  # checked before the export's work
        export(model, output, args.format)
        print(f"Wrote {output} ({args.format}: {args.input_type} images N×3×32×32 in, 10 logits out; "
              f"normalisation and tta {model.tta} inside)")
        exported = load_exported(output, args.format) if args.format == "onnx" or args.test_data else None
        if args.format == "onnx":
            images = example_images(64, args.input_type)
            with torch.no_grad():
                difference = float((exported(images) - model(images)).abs().max())
            if difference > ONNX_TOLERANCE:
                raise RuntimeError(f"ONNX Runtime's logits differ from PyTorch's by {difference:.1e} (> {ONNX_TOLERANCE:.0e})")
            print(f"ONNX Runtime's logits equal PyTorch's within {difference:.1e} on 64 images")
        if args.test_data is not None:
            data = load(args.test_data)
            accuracy = accuracy_of(exported, args.input_type, data.test_images, data.test_labels)
            print(f"Test accuracy of {output} on {args.test_data}: {accuracy:.2%} ({len(data.test_labels):,} images)")


if __name__ == "__main__":
    main()
