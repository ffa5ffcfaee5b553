"""Metrics on inputs whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from trainer.metrics import attack_success_rate, auroc, gini, min_max_ratio, share


def test_auroc_on_known_inputs() -> None:
    assert auroc([3, 4, 5], [0, 1, 2]) == 1.0
    assert auroc([0, 1], [2, 3]) == 0.0
    assert auroc([1, 1], [1, 1, 1]) == 0.5
    # pairs (pos, neg): (0.9, 0.5) (0.9, 0.1) (0.4, 0.1) won, (0.4, 0.5) lost -> 3/4
    assert auroc([0.9, 0.4], [0.5, 0.1]) == 0.75
    # one tie counts one half: (2 vs 2) half, (2 vs 1) won -> 1.5/2
    assert auroc([2], [2, 1]) == 0.75


def test_auroc_agrees_with_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 6, 40).astype(float)
    neg = rng.integers(0, 4, 25).astype(float)
    labels = np.r_[np.ones(40), np.zeros(25)]
    assert auroc(pos, neg) == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]), abs=1e-12)


def test_auroc_needs_both_classes_and_finite_scores() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auroc([1.0], [])
    with pytest.raises(ValueError, match="finite"):
        auroc([float("nan")], [1.0])


def test_gini_on_known_inputs() -> None:
    assert gini([5, 5, 5, 5]) == 0.0
    assert gini([0, 0, 0, 8]) == pytest.approx(0.75)  # (n - 1) / n
    assert gini([1, 2, 3, 4]) == pytest.approx(0.25)  # sum |xi - xj| = 20, 2 n^2 mean = 80
    assert gini([0, 0]) == 0.0
    assert gini([4, 1, 3, 2]) == gini([1, 2, 3, 4])
    with pytest.raises(ValueError):
        gini([-1, 2])


def test_min_max_ratio_and_share() -> None:
    assert min_max_ratio([2, 4, 8]) == 0.25
    assert min_max_ratio([0, 0]) == 1.0
    assert min_max_ratio([0, 3]) == 0.0
    assert share(1, 4) == 0.25 and share(1, 0) == 0.0


def test_attack_success_rate_ignores_inputs_already_in_the_target_class() -> None:
    preds = torch.tensor([9, 9, 1, 9, 9])
    true = torch.tensor([0, 1, 2, 9, 9])
    assert attack_success_rate(preds, true, target=9) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        attack_success_rate(preds, torch.full((5,), 9), target=9)
