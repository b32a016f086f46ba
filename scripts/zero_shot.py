"""Zero-shot learning on CIFAR-10: train on eight classes, recognise the two held out by their attributes, then test.

    python scripts/zero_shot.py --data.data_dir DIR                                  # cat and truck held out
    python scripts/zero_shot.py --data.data_dir DIR --data.unseen_classes [deer,ship] --config configs/fast.yaml

fit.py's flags and config files all apply; the model is lit_cifar.zero_shot.AttributeClassifier (the
attribute table and the method are there). After training, the final weights are tested on the whole
test split and the zero-shot figures printed; they are in the run's TensorBoard logs too.
"""

from lit_cifar.cli import main
from lit_cifar.zero_shot import ZeroShotCLI, summary

if __name__ == "__main__":
    cli = main("fit", cli=ZeroShotCLI)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    print(summary(cli.trainer.callback_metrics, cli.model.unseen))
