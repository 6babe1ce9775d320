"""A small CNN on 28x28 images for the generators benchmark: labels generated samples, gives the
penultimate features Fréchet distances are measured on, and is trained on generated samples for
the classifier-accuracy score."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

SEED = 0


class Classifier(nn.Module):
    """Two conv stages and a 64-unit penultimate layer (the Fréchet features)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 7 * 7, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _tensor(images: NDArray, max_value: float) -> torch.Tensor:
    return torch.from_numpy(np.asarray(images, np.float32).reshape(-1, 1, 28, 28) / max_value)


def train_classifier(X: NDArray, y: NDArray, max_value: float, epochs: int) -> Classifier:
    torch.manual_seed(SEED)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, labels = _tensor(X, max_value), torch.from_numpy(np.asarray(y, np.int64))
    shuffle = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(x), generator=shuffle).split(64):
            loss = nn.functional.cross_entropy(model(x[rows]), labels[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: Classifier, X: NDArray, max_value: float) -> tuple[NDArray, NDArray]:
    """Predicted labels (N,) and penultimate features (N, 64)."""
    x = _tensor(X, max_value)
    feats = torch.cat([model.features(x[s:s + 2048]) for s in range(0, len(x), 2048)])
    return model.head(feats).argmax(1).numpy(), feats.numpy().astype(np.float64)


def frechet_distance(a: NDArray, b: NDArray) -> float:
    """FD between Gaussians fitted to two feature sets (rows are samples)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr sqrt(A B) = sum of sqrt eigenvalues of sqrt(A) B sqrt(A): symmetric, so it stays
    # real and stable when dead ReLU units make a covariance singular.
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
