"""Scores against simulated truth: detection F1 of cell centres and correlation of traces."""

from __future__ import annotations

import numpy as np


def match_points(found: np.ndarray, truth: np.ndarray, max_distance: float) -> list[tuple[int, int]]:
    """One-to-one matching of points closer than ``max_distance`` (Hungarian, least total distance).

    Returns
    -------
    list of (found_index, truth_index)
    """
    from scipy.optimize import linear_sum_assignment

    found = np.asarray(found, float).reshape(-1, 3)
    truth = np.asarray(truth, float).reshape(-1, 3)
    if len(found) == 0 or len(truth) == 0:
        return []
    distance = np.linalg.norm(found[:, None, :] - truth[None, :, :], axis=-1)
    cost = np.where(distance <= max_distance, distance, 1e9)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if distance[r, c] <= max_distance]


def detection_scores(found: np.ndarray, truth: np.ndarray, max_distance: float) -> dict:
    """Precision, recall and F1 of found cell centres against true ones (same units)."""
    pairs = match_points(found, truth, max_distance)
    tp = len(pairs)
    precision = tp / len(found) if len(found) else 0.0
    recall = tp / len(truth) if len(truth) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": tp, "found": len(found), "true": len(truth)}


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN for flat rows)."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(1) / np.where(denominator > 0, denominator, 1), np.nan)


def trace_scores(traces: np.ndarray, true_traces: np.ndarray, pairs: list[tuple[int, int]]) -> dict:
    """Correlation of recovered traces with the true traces of the cells they were matched to.

    Unmatched true cells count as correlation 0 so that missing cells lower the median.
    """
    n_true = len(true_traces)
    correlation = np.zeros(n_true)
    if pairs:
        found_idx, true_idx = np.array(pairs).T
        r = pearson_rows(traces[found_idx], true_traces[true_idx])
        correlation[true_idx] = np.nan_to_num(r, nan=0.0)
    return {
        "median_pearson": float(np.median(correlation)) if n_true else float("nan"),
        "mean_pearson": float(np.mean(correlation)) if n_true else float("nan"),
        "per_cell": correlation,
    }
