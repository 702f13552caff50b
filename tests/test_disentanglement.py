"""The disentanglement metrics on representations whose answer is known by construction."""

import numpy as np
import pytest

from diti_hf.evaluation.disentanglement import (
    dci,
    dci_from_importance,
    discretize,
    factor_vae_score,
    importance_by_group,
    mig,
    sap,
)

N, CLASSES = 1200, 4


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    return np.random.default_rng(0).integers(0, CLASSES, size=(N, 3))


def _identity(factors):
    return factors + 0.05 * np.random.default_rng(1).standard_normal(factors.shape)


def _rotated(factors):
    q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 3)))
    return _identity(factors) @ q


def _noise(factors):
    return np.random.default_rng(3).standard_normal(factors.shape)


@pytest.fixture(scope="module")
def scores(factors):
    out = {}
    for name, make in (("identity", _identity), ("rotated", _rotated), ("noise", _noise)):
        z = make(factors)
        out[name] = {
            **dci(z, factors, estimator="random_forest"),
            "mig": mig(z, factors),
            "sap": sap(z, factors),
            "factor_vae": factor_vae_score(z, factors, num_train=500, num_eval=300),
        }
    return out


def test_factors_themselves_score_near_one(scores):
    s = scores["identity"]
    assert s["disentanglement"] > 0.9 and s["completeness"] > 0.9 and s["informativeness"] > 0.97
    assert s["mig"] > 0.9 and s["factor_vae"] > 0.97
    # a linear SVM on one dim separates only the outer classes of 4: SAP is the gap over chance, well above noise
    assert s["sap"] > 0.2


def test_a_rotation_keeps_the_information_but_not_the_disentanglement(scores):
    a, b = scores["identity"], scores["rotated"]
    assert b["disentanglement"] < a["disentanglement"] - 0.3
    assert b["completeness"] < a["completeness"] - 0.3
    assert b["informativeness"] > 0.9 and abs(a["informativeness"] - b["informativeness"]) < 0.1
    assert b["mig"] < a["mig"] - 0.3 and b["sap"] < a["sap"]


def test_noise_scores_near_zero(scores):
    s = scores["noise"]
    assert s["disentanglement"] < 0.2 and s["mig"] < 0.05 and s["sap"] < 0.05
    assert s["informativeness"] < 0.4  # chance is 0.25
    assert s["factor_vae"] < 0.6  # chance is 1/3


def test_a_factor_copied_into_two_dims_lowers_completeness_only(factors):
    z = _identity(factors)
    copied = np.concatenate([z, z[:, :1] + 0.05 * np.random.default_rng(4).standard_normal((N, 1))], axis=1)
    plain, doubled = dci(z, factors, estimator="random_forest"), dci(copied, factors, estimator="random_forest")
    assert doubled["completeness"] < plain["completeness"] - 0.1
    assert doubled["disentanglement"] > 0.9 and doubled["informativeness"] > 0.97


def test_gradient_boosting_is_the_default_estimator(factors):
    s = dci(_identity(factors[:400]), factors[:400])
    assert s["disentanglement"] > 0.9 and s["informativeness"] > 0.95


def test_dci_from_known_importances_and_groups():
    perfect = dci_from_importance(np.eye(3))
    assert perfect == pytest.approx({"disentanglement": 1.0, "completeness": 1.0})
    uniform = dci_from_importance(np.ones((3, 3)))
    assert uniform == pytest.approx({"disentanglement": 0.0, "completeness": 0.0})
    grouped = importance_by_group(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), [(0, 2), (2, 4)])
    assert grouped.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_discretize_and_bad_inputs():
    bins = discretize(np.linspace(0, 1, 100)[:, None], num_bins=10)
    assert bins.min() == 0 and bins.max() == 9 and np.bincount(bins[:, 0]).tolist() == [10] * 10
    with pytest.raises(ValueError, match="integer labels"):
        mig(np.zeros((10, 2)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="same N >= 4"):
        dci(np.zeros((10, 2)), np.zeros((9, 2), dtype=int))
    with pytest.raises(ValueError, match="NaN"):
        sap(np.full((10, 2), np.nan), np.zeros((10, 2), dtype=int))
