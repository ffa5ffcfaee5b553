"""Data sets shipped inside scikit-learn (no downloads) and the Dirichlet label-skew partitioner.

Dirichlet partition (Hsu et al. 2019): for each class c, draw p_c ~ Dir(alpha * 1_n) and give client k the share
p_c[k] of class c's samples. alpha -> 0 gives each client few classes; alpha -> inf approaches IID.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

DatasetName = Literal["digits", "breast_cancer"]
DATASETS: tuple[DatasetName, ...] = ("digits", "breast_cancer")


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # float32 [n, features], standardized with training statistics
    y_train: torch.Tensor  # int64 [n]
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_features: int
    num_classes: int


def load_dataset(name: str, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    if name == "digits":
        bunch = load_digits()
    elif name == "breast_cancer":
        bunch = load_breast_cancer()
    else:
        raise ValueError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0
    return Dataset(
        name=name,
        x_train=torch.from_numpy(((x_tr - mean) / std).astype(np.float32)),
        y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy(((x_te - mean) / std).astype(np.float32)),
        y_test=torch.from_numpy(y_te),
        num_features=x.shape[1],
        num_classes=int(y.max()) + 1,
    )


def dirichlet_partition(
    labels: np.ndarray, n_clients: int, alpha: float, *, seed: int = 0, min_size: int = 10, max_tries: int = 100
) -> list[np.ndarray]:
    """Split sample indices across ``n_clients`` with Dirichlet(alpha) label skew.

    Redraws (up to ``max_tries``) until every client holds at least ``min_size`` samples, so nobody trains on
    nothing. Returns sorted index arrays.
    """
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1, got {n_clients}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if n_clients * min_size > len(labels):
        raise ValueError(f"cannot give {n_clients} clients {min_size} samples each from {len(labels)} samples")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for c in classes:
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            shares = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(shares) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"no Dirichlet(alpha={alpha}) split gave every client >= {min_size} samples in {max_tries} tries")


def dirichlet_resample(
    labels: np.ndarray, n_clients: int, alpha: float, *, size: int, seed: int = 0
) -> list[np.ndarray]:
    """Simulated clients for more participants than the data set can split: client k draws ``size`` samples with
    replacement from its own Dirichlet(alpha) class mix (so clients overlap, unlike ``dirichlet_partition``).
    Returns sorted index arrays."""
    if n_clients < 1 or size < 1:
        raise ValueError(f"need n_clients >= 1 and size >= 1, got {n_clients} and {size}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    out = []
    for _ in range(n_clients):
        counts = rng.multinomial(size, rng.dirichlet(np.full(len(classes), alpha)))
        picks = [rng.choice(idx, k) for idx, k in zip(by_class, counts, strict=True) if k]
        out.append(np.sort(np.concatenate(picks).astype(np.int64)))
    return out
