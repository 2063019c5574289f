"""The training loop of the common PyTorch tutorials: the reference the torch engine is timed
against (benchmarks/torch_speed.py).

A TensorDataset and DataLoader(batch_size=128, shuffle=True) over MNIST as lenet5 prepares it
(padded to 32x32, normalised with the training set's mean and std), the modern LeNet-5 as an
nn.Module, Adam at lr 1e-3, and ``loss.item()`` after every step for a running loss. Only the
training loop is timed; the test accuracy is measured after the last epoch.

    python benchmarks/tutorial_loop.py [--epochs 2] [--device cpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lenet5.arch import LENET5
from lenet5.data import load
from lenet5.data.transforms import input_normalization, prepare_inputs


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def mnist_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train x, train y, test x, test y): (N, 1, 32, 32) float32 inputs, int64 labels."""
    ds = load("mnist", log=lambda _: None)
    norm = input_normalization(LENET5, ds.train_images)
    return (torch.from_numpy(prepare_inputs(ds.train_images, norm)),
            torch.from_numpy(ds.train_labels.astype(np.int64)),
            torch.from_numpy(prepare_inputs(ds.test_images, norm)),
            torch.from_numpy(ds.test_labels.astype(np.int64)))


def step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
         labels: torch.Tensor, device: str) -> float:
    """One training step as the tutorials write it, ending with the loss as a Python float."""
    images, labels = images.to(device), labels.to(device)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()


def train(epochs: int, device: str = "cpu", seed: int = 0) -> dict:
    """Seconds per epoch, the last epoch's mean loss, and the test accuracy."""
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = mnist_tensors()
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=128, shuffle=True)
    model = LeNet5().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        running_loss = 0.0
        for images, labels in loader:
            running_loss += step(model, optimizer, images, labels, device)
        seconds.append(time.perf_counter() - started)
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x_test[i:i + 1000].to(device)).argmax(1).cpu()
                           == y_test[i:i + 1000]).sum()) for i in range(0, len(x_test), 1000))
    return {"epoch_seconds": seconds, "train_loss": running_loss / len(loader),
            "test_acc": correct / len(x_test), "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs to time (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = train(args.epochs, args.device)
    if args.json:
        print(json.dumps(result))
        return
    for i, s in enumerate(result["epoch_seconds"], 1):
        print(f"epoch {i}: {s:.2f} s")
    print(f"test accuracy {100 * result['test_acc']:.2f}%")


if __name__ == "__main__":
    main()
