"""Train: `python scripts/fit.py [--accelerator gpu] [--config FILE] [--trainer.* --model.* --data.* ...]`."""

from lit_cifar.cli import main

if __name__ == "__main__":
    main("fit")
