"""The seed's plain PyTorch training loop, kept as the reference that scripts/benchmark.py measures against.

Faithful to the study notes: torchvision's PIL transforms image by image in a DataLoader with
no workers, batch 32, fp32, Adam lr 1e-3, `.item()` on every step, the whole 50,000-image
training set, and an evaluation on the test set after every epoch (as the seed's "validation").
Only the data source differs: images come from this project's uint8 cache, exactly as
torchvision's CIFAR10 dataset serves them from its in-memory arrays (PIL.Image.fromarray).

    python scripts/seed_loop.py --data_dir /path/to/cifar10 --epochs 20
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from lit_cifar import sources


class SeedCNNModel(nn.Module):
    """The seed's CNNModel, verbatim in structure (ReLU before pooling)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(64 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = x.view(-1, 64 * 8 * 8)
        return self.fc2(torch.relu(self.fc1(x)))


TRANSFORM_TRAIN = transforms.Compose(
    [
        transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(10),
        transforms.RandomAffine(degrees=0, shear=10, scale=(0.8, 1.2)),
        transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ]
)
TRANSFORM_TEST = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])


class PILImages(Dataset):
    """What torchvision's CIFAR10 dataset does: an HWC uint8 array → PIL image → transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images.permute(0, 2, 3, 1).numpy(), labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            correct += (model(inputs).argmax(1) == labels).sum().item()
            total += labels.size(0)
    return correct / total


def train_seed_loop(
    data: sources.Cifar10,
    epochs: int,
    device: torch.device,
    on_epoch_end: Callable[[int, float, float], None] = lambda epoch, seconds, test_accuracy: None,
) -> nn.Module:
    """Train as the seed did; report each epoch's training seconds (test pass excluded) and test accuracy."""
    train_loader = DataLoader(PILImages(data.train_images, data.train_labels, TRANSFORM_TRAIN), batch_size=32, shuffle=True)
    test_loader = DataLoader(PILImages(data.test_images, data.test_labels, TRANSFORM_TEST), batch_size=32, shuffle=False)
    model = SeedCNNModel().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        running_loss, correct, total = 0.0, 0, 0
        for inputs, labels in train_loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            correct += (outputs.argmax(1) == labels).sum().item()
            total += labels.size(0)
        seconds = time.perf_counter() - start
        on_epoch_end(epoch, seconds, evaluate(model, test_loader, device))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default="data", help="CIFAR-10 in any layout lit_cifar accepts")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    sources.prepare(data_dir, download=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report = lambda epoch, seconds, accuracy: print(f"epoch {epoch}: {seconds:.1f} s, test accuracy {accuracy:.4f}")  # noqa: E731
    train_seed_loop(sources.load(data_dir), args.epochs, device, report)


if __name__ == "__main__":
    main()
