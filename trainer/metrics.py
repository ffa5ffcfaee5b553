"""Plain metrics for the robustness benchmark: score separation (AUROC), reward spread (Gini, min/max), shares and
backdoor attack success."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve of a score that should rank ``positive`` above ``negative``: the probability that a
    random positive scores higher than a random negative, ties counting one half (Mann-Whitney U / (n_p n_n)).

    1.0 separates perfectly, 0.5 is chance, 0.0 ranks every negative first. In the benchmark the positives are the
    honest participants' committed scores and the negatives the Byzantine ones'."""
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"AUROC needs both classes, got {pos.size} positive and {neg.size} negative scores")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("AUROC scores must be finite")
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    sorted_vals = values[order]
    i = 0
    while i < values.size:  # average ranks over ties
        j = i
        while j + 1 < values.size and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def gini(values: Sequence[float]) -> float:
    """Gini coefficient of non-negative amounts: 0 when everyone gets the same, (n-1)/n when one gets everything.
    0 for an all-zero list."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        raise ValueError("Gini of an empty list")
    if (x < 0).any():
        raise ValueError(f"Gini needs non-negative amounts, got min {x.min()}")
    total = x.sum()
    if total == 0:
        return 0.0
    n = x.size
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * total))


def min_max_ratio(values: Sequence[float]) -> float:
    """min / max of non-negative amounts (1.0 = equal; 0.0 = someone got nothing). 1.0 if all are zero."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("min/max of an empty list")
    if (x < 0).any():
        raise ValueError(f"min/max ratio needs non-negative amounts, got min {x.min()}")
    return 1.0 if x.max() == 0 else float(x.min() / x.max())


def share(part: float, total: float) -> float:
    """part / total, 0 when nothing was paid."""
    return part / total if total else 0.0


def attack_success_rate(predictions: torch.Tensor, true_labels: torch.Tensor, target: int) -> float:
    """Backdoor success: among triggered test inputs whose true label is not the target, the share classified as the
    target."""
    keep = true_labels != target
    if not bool(keep.any()):
        raise ValueError(f"no test input outside the target class {target}")
    return float((predictions[keep] == target).float().mean())
