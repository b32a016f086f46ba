import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lit_cifar.augment import normalize
from lit_cifar.cli import CifarCLI
from lit_cifar.errors import ConfigError
from lit_cifar.module import CIFARClassifier
from lit_cifar.networks import SeedCNN
from lit_cifar.tta import tta_logits


def test_seed_cnn_has_the_seeds_layers_and_parameter_count():
    net = SeedCNN()
    assert net(torch.zeros(4, 3, 32, 32)).shape == (4, 10)
    # conv1 896 + conv2 18,496 + fc1 262,208 + fc2 650, as in the seed
    assert sum(p.numel() for p in net.parameters()) == 282_250
    assert [name for name, _ in net.named_parameters()] == [
        "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
    ]


def test_dropout_acts_in_training_only():
    net = SeedCNN(dropout=0.5)
    images = torch.randn(2, 3, 32, 32)
    net.eval()
    assert torch.equal(net(images), net(images))
    net.train()
    assert not torch.equal(net(images), net(images))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dropout": 1.0}, r"--model.dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"--model.dropout must be in \[0, 1\)"),
        ({"reg_lambda": -1e-4}, "--model.reg_lambda must be at least 0"),
        ({"l1_ratio": 1.5}, r"--model.l1_ratio must be in \[0, 1\]"),
        ({"regularization": "l3"}, "--model.regularization must be one of none, l1, l2, elastic_net, got 'l3'"),
        ({"cuda_graph": True, "compile_mode": "default"}, "--model.cuda_graph and --model.compile_mode default"),
    ],
)
def test_bad_hyperparameters_name_their_flag(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CIFARClassifier(**kwargs)


def test_default_optimizer_is_the_seeds_adam():
    optimizer = CIFARClassifier().configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 1e-3


def test_pooling_before_relu_computes_the_seeds_function():
    net = SeedCNN()
    images = torch.randn(8, 3, 32, 32)
    x = net.pool(torch.relu(net.conv1(images)))  # the seed's order: ReLU, then pool
    x = net.pool(torch.relu(net.conv2(x)))
    seed_logits = net.fc2(torch.relu(net.fc1(x.flatten(1))))
    assert torch.equal(net(images), seed_logits)


def test_importing_the_module_sets_the_process_up_for_cpu_training():
    # In a fresh process, as the scripts run: every worker thread torch starts must flush denormals
    # (a multi-threaded op on them gives zeros), and without a GPU the per-step NVML probe is off.
    probe = (
        "import os, torch, lit_cifar.module\n"
        "denormals = torch.full((1 << 22,), 1e-39)\n"
        "print((denormals * 0.5).count_nonzero().item(), os.environ['PYTORCH_NVML_BASED_CUDA_CHECK'])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    nonzero, nvml_check = result.stdout.split()
    assert nonzero == "0"
    assert nvml_check == ("1" if torch.cuda.is_available() else "0")


def test_importing_the_module_keeps_freed_memory_for_the_next_step():
    # glibc's defaults hand the step's freed activation blocks back to the kernel, hundreds of page faults
    # per step (docs/benchmarks.md); kept for reuse, a few dozen at most.
    probe = (
        "import resource, torch, torch.nn.functional as F, lit_cifar.module\n"
        "from lit_cifar.networks import SeedCNN\n"
        "net = SeedCNN().to(memory_format=torch.channels_last)\n"
        "optimizer = torch.optim.Adam(net.parameters())\n"
        "images, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))\n"
        "def step():\n"
        "    F.cross_entropy(net(images), labels).backward(); optimizer.step(); optimizer.zero_grad()\n"
        "for _ in range(5): step()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(20): step()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)\n"
        "torch.ones(1 << 25).sum()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5): torch.ones(1 << 25).sum()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    small_step_faults, large_block_faults = map(float, result.stdout.split())
    assert small_step_faults < 200
    # A 128 MiB block (the speedrun's batch-1024 activations are that large), which glibc would map on its
    # own and fault in page by page (32,768 pages) each time: taken from the kept heap instead.
    assert large_block_faults < 1000


def test_training_loss_and_accuracy_are_means_over_the_epochs_images(learnable_data_dir):
    # With a learning rate of 0 the network stays as it starts, so the epoch's Loss/train and Accuracy/train are
    # those of the initial network over all 50 training images, trained in batches of 16, 16, 16 and 2: a mean
    # of the batch means would weigh the last two images eight times over.
    cli = CifarCLI(
        args=["--data.data_dir", str(learnable_data_dir), "--data.val_size", "10", "--data.batch_size", "16",
              "--data.augment", "false", "--model.optimizer", "SGD", "--model.optimizer.lr", "0", "--max_epochs", "1",
              "--model.regularization", "l2", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
              "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0"],
        run=False,
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.num_training_batches == 4
    images, labels = map(torch.cat, zip(*cli.datamodule.train_dataloader()))
    with torch.no_grad():
        logits = cli.model(normalize(images))
        expected_penalty = cli.model.penalty()
    metrics = cli.trainer.callback_metrics
    torch.testing.assert_close(metrics["Loss/train"], F.cross_entropy(logits, labels))
    assert metrics["Accuracy/train"] == (logits.argmax(1) == labels).float().mean()
    torch.testing.assert_close(metrics["Penalty/train"], expected_penalty)


def test_evaluation_loss_is_the_mean_over_images_across_unequal_batches():
    classifier = CIFARClassifier().eval()
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(13, 3, 32, 32, generator=generator), torch.randint(0, 10, (13,), generator=generator)
    with torch.no_grad():
        for batch in ((images[:10], labels[:10]), (images[10:], labels[10:])):
            classifier.validation_step(batch, 0)
        expected = torch.nn.functional.cross_entropy(classifier(images), labels)
    assert torch.allclose(classifier.val_metrics["Loss"].compute(), expected)


def test_evaluation_with_tta_scores_the_averaged_logits_beside_the_plain_ones():
    torch.manual_seed(0)
    classifier = CIFARClassifier(tta="flip_translate").eval()
    images, labels = torch.randn(300, 3, 32, 32), torch.randint(0, 10, (300,))
    with torch.no_grad():
        classifier.test_step((images, labels), 0)
        predicted = classifier(images).argmax(1)
        augmented = tta_logits(classifier, images, "flip_translate").argmax(1)
    plain = (predicted == labels).float().mean()
    metrics = classifier.test_metrics
    assert plain != (augmented == labels).float().mean()  # so the two metrics can tell the logits apart
    assert metrics["Accuracy"].compute() == plain
    assert metrics["AccuracyTTA"].compute() == (augmented == labels).float().mean()
    # The confusion matrix (and the per-class accuracies read from it) are of the plain predictions, as Accuracy/*.
    assert not torch.equal(torch.bincount(predicted, minlength=10), torch.bincount(augmented, minlength=10))
    assert torch.equal(metrics["Confusion"].compute().sum(0), torch.bincount(predicted, minlength=10))
