"""Train image classifiers on CIFAR-10 with PyTorch Lightning: the seed's CNN, its augmentation and regularizers."""
