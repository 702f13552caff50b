r"""The disentanglement metrics of the representation-learning literature on `(z, factors)`: DCI, MIG, SAP and the
FactorVAE score, each as its paper and disentanglement_lib define it, with the same parameter names and defaults.

`z` is an `(N, d)` array of representations and `factors` an `(N, F)` array of integer factor labels (bin continuous
factors first, e.g. with [`discretize`]). The estimators are scikit-learn's: the metrics are written here, from the
papers, on top of them.

- **DCI** (Eastwood & Williams, 2018): an importance matrix `R` (d × F) from one gradient-boosted-tree classifier per
  factor; *disentanglement* is `1 − H_F(R_i / Σ_j R_ij)` per dim, weighted by the dim's share of the importance;
  *completeness* is `1 − H_d(R_j / Σ_i R_ij)` per factor, averaged; *informativeness* is the classifiers' held-out
  accuracy (higher is better), as disentanglement_lib reports it.
- **MIG** (Chen et al., 2018): `z` discretised per dim into `num_bins` equal-width bins; per factor the gap between
  the two largest mutual informations with a dim, divided by the factor's entropy; averaged over factors.
- **SAP** (Kumar et al., 2018): per (dim, factor) the held-out accuracy of a linear SVM on that dim alone; per factor
  the gap between the two best dims; averaged.
- **FactorVAE score** (Kim & Mnih, 2018): votes `(argmin_i Var[z_i / s_i], k)` over batches that share the value of
  one factor `k`; the accuracy of the majority-vote classifier from dim to factor. The batches are drawn by *subset
  selection* from the given data (the examples whose factor `k` equals a drawn value), since a dataset cannot in
  general be sampled conditionally.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check(z: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z, factors = np.asarray(z, dtype=np.float64), np.asarray(factors)
    if z.ndim != 2 or factors.ndim != 2 or len(z) != len(factors) or len(z) < 4:
        raise ValueError(
            f"`z` (N, d) and `factors` (N, F) must have the same N >= 4, got {z.shape} and {factors.shape}."
        )
    if not np.isfinite(z).all():
        raise ValueError("`z` contains NaN or infinite values.")
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"`factors` must be integer labels (bin continuous ones first), got dtype {factors.dtype}.")
    return z, factors


def _split(n: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < train_fraction < 1:
        raise ValueError(f"`train_fraction` must lie in (0, 1), got {train_fraction}.")
    order = np.random.default_rng(seed).permutation(n)
    cut = min(n - 1, max(1, int(round(train_fraction * n))))
    return order[:cut], order[cut:]


def discretize(values: np.ndarray, num_bins: int = 20) -> np.ndarray:
    r"""
    Equal-width bins per column, as disentanglement_lib's `_histogram_discretize`: `(N, C)` floats → `(N, C)` ints in
    `[0, num_bins)`. Used for `z` in MIG and for continuous factors before any metric.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"`values` must be (N, C), got shape {values.shape}.")
    if not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"`num_bins` must be an int >= 2, got {num_bins!r}.")
    out = np.zeros(values.shape, dtype=np.int64)
    for c in range(values.shape[1]):
        edges = np.histogram_bin_edges(values[:, c], bins=num_bins)
        out[:, c] = np.digitize(values[:, c], edges[1:-1])
    return out


def _entropy(p: np.ndarray, base: int, axis: int = 0) -> np.ndarray:
    p = p / np.clip(p.sum(axis=axis, keepdims=True), 1e-30, None)
    logs = np.log(np.where(p > 0, p, 1.0)) / np.log(base)
    return -(p * logs).sum(axis=axis)


def dci_importance(
    z: np.ndarray, factors: np.ndarray, train_fraction: float = 0.8, seed: int = 0, estimator: str = "gbt"
) -> tuple[np.ndarray, np.ndarray]:
    r"""
    The DCI importance matrix `(d, F)` and each factor's held-out accuracy `(F,)`.

    Args:
        estimator (`str`, defaults to `"gbt"`): `"gbt"` (scikit-learn's `GradientBoostingClassifier` with its
            defaults, as disentanglement_lib) or `"random_forest"` (faster on large `N`).
    """
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    z, factors = _check(z, factors)
    if estimator not in ("gbt", "random_forest"):
        raise ValueError(f"`estimator` must be 'gbt' or 'random_forest', got {estimator!r}.")
    train, test = _split(len(z), train_fraction, seed)
    importance = np.zeros((z.shape[1], factors.shape[1]))
    accuracy = np.zeros(factors.shape[1])
    for j in range(factors.shape[1]):
        y = factors[:, j]
        if len(np.unique(y[train])) < 2:  # a constant factor: nothing to predict
            accuracy[j] = float(np.mean(y[test] == y[train][0]))
            continue
        model = (
            GradientBoostingClassifier(random_state=seed)
            if estimator == "gbt"
            else RandomForestClassifier(n_estimators=100, max_features=None, random_state=seed, n_jobs=1)
        )
        model.fit(z[train], y[train])
        importance[:, j] = np.abs(model.feature_importances_)
        accuracy[j] = float(np.mean(model.predict(z[test]) == y[test]))
    return importance, accuracy


def dci_from_importance(importance: np.ndarray) -> dict[str, float]:
    """Disentanglement and completeness of an importance matrix `(d, F)` (see the module docstring)."""
    importance = np.asarray(importance, dtype=np.float64)
    d, num_factors = importance.shape
    total = importance.sum()
    if total <= 0:
        return {"disentanglement": 0.0, "completeness": 0.0}
    per_dim = 1.0 - _entropy(importance.T, base=max(num_factors, 2), axis=0) if num_factors > 1 else np.ones(d)
    weights = importance.sum(axis=1) / total
    per_factor = 1.0 - _entropy(importance, base=max(d, 2), axis=0) if d > 1 else np.ones(num_factors)
    used = importance.sum(axis=0) > 0
    return {
        "disentanglement": float(np.sum(per_dim * weights)),
        "completeness": float(np.mean(per_factor[used])) if used.any() else 0.0,
    }


def dci(
    z: np.ndarray, factors: np.ndarray, train_fraction: float = 0.8, seed: int = 0, estimator: str = "gbt"
) -> dict[str, float]:
    r"""
    DCI (Eastwood & Williams, 2018).

    Returns:
        `dict` with `disentanglement`, `completeness` and `informativeness` (mean held-out accuracy over factors).
    """
    importance, accuracy = dci_importance(z, factors, train_fraction, seed, estimator)
    return {**dci_from_importance(importance), "informativeness": float(np.mean(accuracy))}


def _mutual_information(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`(Ca, Cb)` mutual information (nats) between the integer columns of `a` `(N, Ca)` and `b` `(N, Cb)`."""
    from sklearn.metrics import mutual_info_score

    return np.array([[mutual_info_score(a[:, i], b[:, j]) for j in range(b.shape[1])] for i in range(a.shape[1])])


def mig(z: np.ndarray, factors: np.ndarray, num_bins: int = 20) -> float:
    r"""MIG (Chen et al., 2018) with `z` discretised into `num_bins` equal-width bins per dim."""
    from sklearn.metrics import mutual_info_score

    z, factors = _check(z, factors)
    if z.shape[1] < 2:
        raise ValueError("MIG needs `z` with at least 2 dims.")
    mi = _mutual_information(discretize(z, num_bins), factors)
    entropy = np.array([mutual_info_score(factors[:, j], factors[:, j]) for j in range(factors.shape[1])])
    ranked = np.sort(mi, axis=0)[::-1]
    valid = entropy > 0
    return float(np.mean((ranked[0, valid] - ranked[1, valid]) / entropy[valid])) if valid.any() else 0.0


def sap(z: np.ndarray, factors: np.ndarray, train_fraction: float = 0.8, seed: int = 0, svm_c: float = 0.01) -> float:
    r"""SAP (Kumar et al., 2018) for discrete factors: linear SVMs (`LinearSVC(C=svm_c)`, balanced) on single dims."""
    from sklearn.svm import LinearSVC

    z, factors = _check(z, factors)
    if z.shape[1] < 2:
        raise ValueError("SAP needs `z` with at least 2 dims.")
    train, test = _split(len(z), train_fraction, seed)
    scores = np.zeros((z.shape[1], factors.shape[1]))
    for j in range(factors.shape[1]):
        y = factors[:, j]
        if len(np.unique(y[train])) < 2:
            continue
        for i in range(z.shape[1]):
            model = LinearSVC(C=svm_c, class_weight="balanced", random_state=seed)
            model.fit(z[train, i : i + 1], y[train])
            scores[i, j] = np.mean(model.predict(z[test, i : i + 1]) == y[test])
    ranked = np.sort(scores, axis=0)[::-1]
    return float(np.mean(ranked[0] - ranked[1]))


def factor_vae_score(
    z: np.ndarray,
    factors: np.ndarray,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
    seed: int = 0,
) -> float:
    r"""
    The FactorVAE score (Kim & Mnih, 2018), with the batches of a fixed factor value drawn by subset selection.

    Args:
        batch_size (`int`, defaults to 64): Examples per vote.
        num_train, num_eval (`int`, defaults to 10,000 and 5,000): Votes to fit and to score the classifier.
        num_variance_estimate (`int`, defaults to 10,000): Examples for each dim's global scale.
        prune_threshold (`float`, defaults to 0.05): Dims whose global std is below this are ignored (collapsed).
        seed (`int`, defaults to 0): Seed of the votes.
    """
    z, factors = _check(z, factors)
    rng = np.random.default_rng(seed)
    scale_idx = rng.choice(len(z), size=min(num_variance_estimate, len(z)), replace=False)
    scale = z[scale_idx].std(axis=0)
    active = scale >= prune_threshold
    if not active.any():
        return 0.0
    scale = np.where(active, scale, 1.0)  # collapsed dims never vote; this only keeps 0 / 0 out of the division
    num_factors = factors.shape[1]
    by_value = [{v: np.flatnonzero(factors[:, k] == v) for v in np.unique(factors[:, k])} for k in range(num_factors)]
    varying = [k for k in range(num_factors) if len(by_value[k]) > 1]
    if not varying:
        raise ValueError("the FactorVAE score needs a factor with at least two values.")

    def votes(n: int) -> np.ndarray:
        out = np.zeros((z.shape[1], num_factors), dtype=np.int64)
        for _ in range(n):
            k = varying[rng.integers(len(varying))]
            value = factors[rng.integers(len(z)), k]
            subset = by_value[k][value]
            batch = z[rng.choice(subset, size=batch_size, replace=len(subset) < batch_size)]
            variance = (batch / scale).var(axis=0, ddof=1)
            variance[~active] = np.inf
            out[int(np.argmin(variance)), k] += 1
        return out

    train_votes, eval_votes = votes(num_train), votes(num_eval)
    classifier = np.argmax(train_votes, axis=1)
    return float(eval_votes[np.arange(z.shape[1]), classifier].sum() / eval_votes.sum())


def importance_by_group(importance: np.ndarray, groups: Sequence[tuple[int, int]]) -> np.ndarray:
    r"""
    The DCI importance summed over groups of dims (e.g. the partition's stages: which time-step range carries which
    factor), normalised per factor: `(G, F)`, each column summing to 1 (0 for a factor no dim predicts).

    Args:
        importance (`np.ndarray`): `(d, F)` from [`dci_importance`].
        groups (`list[(start, end)]`): Half-open dim ranges.
    """
    importance = np.asarray(importance, dtype=np.float64)
    out = np.stack([importance[start:end].sum(axis=0) for start, end in groups])
    totals = out.sum(axis=0, keepdims=True)
    return np.divide(out, totals, out=np.zeros_like(out), where=totals > 0)


def disentanglement_metrics(
    z: np.ndarray,
    factors: np.ndarray,
    seed: int = 0,
    estimator: str = "gbt",
    num_votes: tuple[int, int] = (10000, 5000),
) -> dict[str, float]:
    """DCI (three numbers), MIG, SAP and the FactorVAE score of `z` in one dict, for reports."""
    scores = {f"dci_{k}": v for k, v in dci(z, factors, seed=seed, estimator=estimator).items()}
    scores["mig"] = mig(z, factors)
    scores["sap"] = sap(z, factors, seed=seed)
    scores["factor_vae"] = factor_vae_score(z, factors, num_train=num_votes[0], num_eval=num_votes[1], seed=seed)
    return scores
