"""A linear probe: multinomial logistic regression on frozen image features, in a few lines of numpy.

The objective is scikit-learn's `LogisticRegression(C=1.0)` (multinomial, L2 on the weights, not the
bias): ½|W|² + C Σ cross-entropy, divided here by the number of rows so its scale does not grow with
the training set. Features are standardised with the training set's mean and standard deviation
first, so one C suits any backbone. Full-batch L-BFGS (scipy's, with the exact gradient) in float64 from
zero weights: the objective is strictly convex, so the result is the unique optimum, the same on every
run and machine up to round-off, with no seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize

DEFAULT_C = 1.0
MAX_ITERATIONS = 1000
TOLERANCE = 1e-6


class ProbeError(ValueError):
    """A training set a probe cannot learn from; the message says what is wrong."""


@dataclass(frozen=True)
class LinearProbe:
    """A trained probe: `classes[k]` is the label of output k."""

    classes: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray  # (D, C)
    bias: np.ndarray  # (C,)

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.weight.shape[0]:
            raise ProbeError(f"features must have shape (N, {self.weight.shape[0]}), got {x.shape}")
        return ((x - self.mean) / self.scale) @ self.weight + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N,) indices into `classes`."""
        return self.logits(features).argmax(axis=1)


def fit_probe(
    features: np.ndarray, labels: Sequence[str], classes: Sequence[str], *, c: float = DEFAULT_C
) -> LinearProbe:
    """Train on (N, D) `features` labelled by `labels`; `classes` fixes the output order (and may hold
    labels absent from this training set, which the probe then never predicts)."""
    x = np.asarray(features, np.float64)
    classes = tuple(classes)
    index = {label: k for k, label in enumerate(classes)}
    if x.ndim != 2 or x.shape[0] != len(labels):
        raise ProbeError(f"features must be (N, D) for {len(labels)} labels, got {x.shape}")
    unknown = sorted({str(label) for label in labels} - set(index))
    if unknown:
        raise ProbeError(f"labels not among the classes {list(classes)}: {unknown[:5]}")
    y = np.array([index[label] for label in labels], dtype=np.int64)
    if len(set(y.tolist())) < 2:
        raise ProbeError(f"a probe needs at least 2 classes in its training set, got {sorted(set(labels))}")
    if not np.isfinite(x).all():
        raise ProbeError("features contain NaN or Inf")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)  # a constant feature carries nothing; keep it at 0
    z = (x - mean) / scale
    n, d, k = z.shape[0], z.shape[1], len(classes)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    penalty = 0.5 / (c * n)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weight, bias = theta[: d * k].reshape(d, k), theta[d * k :]
        logits = z @ weight + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -(onehot * (logits - log_norm)).sum() / n + penalty * (weight * weight).sum()
        residual = (np.exp(logits - log_norm) - onehot) / n
        grad_w = z.T @ residual + 2 * penalty * weight
        return float(loss), np.concatenate([grad_w.ravel(), residual.sum(axis=0)])

    found = optimize.minimize(objective, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                              options={"maxiter": MAX_ITERATIONS, "gtol": TOLERANCE, "ftol": 1e-12})  # fmt: skip
    return LinearProbe(classes, mean, scale, found.x[: d * k].reshape(d, k).copy(), found.x[d * k :].copy())
