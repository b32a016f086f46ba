"""Evaluate a checkpoint on the official test split: `python scripts/test.py --ckpt_path CKPT [--data.data_dir DIR]`."""

from lit_cifar.cli import main

if __name__ == "__main__":
    main("test")
