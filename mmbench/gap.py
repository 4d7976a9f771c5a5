"""The per-sample modality gap and its two-component Gaussian mixture (torch-free).

``G_i = p(y_i|m_1) − p(y_i|m_2)``: the difference of two modalities' softmax probabilities for the
true class (arXiv 2510.21797). The ``gmm_gap`` method fits the mixture during training; the report
fits the same mixture on a run's ``gap.npz`` to draw it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def modality_gap(true_class_prob):
    """``G_i`` from true-class probabilities ``[N, M]`` (array or tensor): first modality minus second."""
    return true_class_prob[:, 0] - true_class_prob[:, 1]


BALANCE_TOL = 0.1  # |mean G| at most this: the component's samples are near balance


def component_label(mean: float, modalities: tuple[str, str] | list[str], tol: float = BALANCE_TOL) -> str:
    """What a mixture component of ``G = p(y|m_1) − p(y|m_2)`` shows: the modality that dominates
    its samples (the sign of its mean), or ``near balance`` when ``|mean| <= tol``. (Which component
    ``gmm_gap`` treats as balanced is its own rule, the smaller ``|mean|``; a plot names what it sees.)"""
    if abs(mean) <= tol:
        return "near balance"
    return f"{modalities[0] if mean > 0 else modalities[1]} dominates"


@dataclass(frozen=True)
class GapMixture:
    """A 2-component GMM on gaps: the balanced component is the one whose mean is closer to 0."""

    means: tuple[float, float]  # (balanced, imbalanced)
    stds: tuple[float, float]
    weights: tuple[float, float]
    posterior_imbalanced: np.ndarray  # gamma_i per sample

    def logs(self) -> dict[str, float]:
        return {"gmm_mean_balanced": self.means[0], "gmm_mean_imbalanced": self.means[1],
                "gmm_std_balanced": self.stds[0], "gmm_std_imbalanced": self.stds[1],
                "gmm_weight_imbalanced": self.weights[1],
                "imbalanced_share": float((self.posterior_imbalanced > 0.5).mean())}


def fit_gap_mixture(gap: np.ndarray, seed: int = 0) -> GapMixture:
    """Fit the mixture (scikit-learn, full covariance) on a 1-D array of gaps."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(gap, dtype=float).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, covariance_type="full", random_state=seed).fit(x)
    means = gmm.means_.ravel()
    order = np.argsort(np.abs(means))  # balanced first
    posterior = gmm.predict_proba(x)[:, order[1]]
    stds = np.sqrt(gmm.covariances_.ravel())
    return GapMixture(tuple(means[order].tolist()), tuple(stds[order].tolist()),
                      tuple(gmm.weights_[order].tolist()), posterior)
