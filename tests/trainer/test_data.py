from __future__ import annotations

import numpy as np
import pytest

from trainer.data import dirichlet_partition, load_dataset
from trainer.local import LocalConfig, train_local
from trainer.model import ModelSpec, accuracy, init_params


@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
def test_dirichlet_partition_assigns_every_sample_exactly_once(alpha: float) -> None:
    labels = np.repeat(np.arange(10), 50)
    parts = dirichlet_partition(labels, 8, alpha, seed=3)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))
    assert min(len(p) for p in parts) >= 10


def test_small_alpha_skews_labels_more_than_large_alpha() -> None:
    labels = np.repeat(np.arange(10), 100)

    def mean_classes_per_client(alpha: float) -> float:
        parts = dirichlet_partition(labels, 10, alpha, seed=0, min_size=5)
        return float(np.mean([np.sum(np.bincount(labels[p], minlength=10) >= 5) for p in parts]))

    assert mean_classes_per_client(0.1) < mean_classes_per_client(100.0)


def test_dirichlet_partition_is_deterministic_and_validates_input() -> None:
    labels = np.repeat(np.arange(3), 40)
    assert all(np.array_equal(a, b) for a, b in zip(dirichlet_partition(labels, 4, 0.5, seed=1), dirichlet_partition(labels, 4, 0.5, seed=1)))
    with pytest.raises(ValueError, match="alpha must be > 0"):
        dirichlet_partition(labels, 4, 0.0)
    with pytest.raises(ValueError, match="cannot give 20 clients"):
        dirichlet_partition(labels, 20, 0.5)


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_packaged_datasets_load_standardized_and_train(name: str) -> None:
    ds = load_dataset(name, seed=0)
    assert ds.x_train.dtype.is_floating_point and abs(float(ds.x_train.mean())) < 0.05
    spec = ModelSpec(ds.num_features, ds.num_classes)
    params = init_params(spec, seed=0)
    before = accuracy(spec, params, ds.x_test, ds.y_test)
    delta = train_local(spec, params, ds.x_train, ds.y_train, LocalConfig(epochs=3), seed=0)
    after = accuracy(spec, {k: params[k] + delta[k] for k in params}, ds.x_test, ds.y_test)
    assert after > max(before, 0.85)


def test_unknown_dataset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        load_dataset("mnist")


def test_dirichlet_resample_draws_skewed_clients_of_the_asked_size() -> None:
    from trainer.data import dirichlet_resample

    labels = np.repeat(np.arange(10), 50)
    parts = dirichlet_resample(labels, 300, 0.1, size=40, seed=3)
    assert len(parts) == 300 and all(len(p) == 40 and (np.diff(p) >= 0).all() for p in parts)
    assert all(p.min() >= 0 and p.max() < len(labels) for p in parts)
    # alpha 0.1: a typical client's majority class holds most of its samples; uniform draws would give ~20%
    majority = np.median([np.bincount(labels[p], minlength=10).max() / 40 for p in parts])
    assert majority > 0.5
    again = dirichlet_resample(labels, 300, 0.1, size=40, seed=3)
    assert all((a == b).all() for a, b in zip(parts, again, strict=True))
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_resample(labels, 3, 0.0, size=4)
    with pytest.raises(ValueError, match="n_clients"):
        dirichlet_resample(labels, 0, 1.0, size=4)
