"""Fréchet distance between two Gaussians fitted to feature sets (FID when the features are Inception's).

The kernel (`frechet_distance`) is a pure function of two means and two covariances, kept
apart from feature extraction as in clean-fid. `FeatureStats` accumulates what the kernel needs
from batches of features so that actors can each summarise their share and a driver can merge
the summaries: the count, the sum of features and the sum of their outer products, in float64.

A number is only comparable with another computed under the same mode (backbone and resize),
so both are carried by `FeatureStats`, refused on merge when they differ, and copied onto
every `FrechetResult`.

Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass

import numpy as np
from scipy import linalg

log = logging.getLogger(__name__)

# Offset added to both covariances' diagonals when the product's square root is not finite,
# as in pytorch-fid and clean-fid: it makes a singular product invertible at a cost far below
# any FID difference worth reporting.
SQRTM_EPS = 1e-6

# Imaginary parts of the square root's diagonal up to this size are round-off and dropped
# (pytorch-fid's tolerance); larger ones mean the covariances are not valid and the call fails.
IMAGINARY_TOLERANCE = 1e-3

_STATS_FORMAT = "diffgen-feature-stats/1"


class FeatureStatsError(ValueError):
    """Feature statistics that cannot be combined, compared or read."""


class FeatureStats:
    """Running sufficient statistics of a set of D-dimensional features.

    Mergeable in any order: the statistics of shards merged together equal those of the
    whole set (up to float64 round-off), so actors can each hold one per group.
    The sums are raw (not centred); in float64 that loses nothing measurable for features of
    the scale backbones produce (|mean| / std up to ~1e3).
    """

    def __init__(self, backbone: str, resize: str, dim: int):
        if dim < 1:
            raise FeatureStatsError(f"dim must be at least 1, got {dim}")
        self.backbone = backbone
        self.resize = resize
        self.dim = int(dim)
        self.count = 0
        self.total = np.zeros(self.dim, dtype=np.float64)
        self.outer = np.zeros((self.dim, self.dim), dtype=np.float64)

    def __repr__(self) -> str:
        return f"FeatureStats(backbone={self.backbone!r}, resize={self.resize!r}, dim={self.dim}, count={self.count})"

    def update(self, features: np.ndarray) -> FeatureStats:
        """Add a batch of features of shape (N, dim); returns self so calls can chain."""
        x = np.asarray(features)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise FeatureStatsError(f"features must have shape (N, {self.dim}), got {x.shape}")
        x = x.astype(np.float64, copy=False)
        if not np.isfinite(x).all():
            rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise FeatureStatsError(f"features contain NaN or Inf in rows {rows[:10].tolist()}")
        self.count += x.shape[0]
        self.total += x.sum(axis=0)
        self.outer += x.T @ x
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """A new FeatureStats holding both sets; the mode and dim must match."""
        self._require_same_mode(other)
        merged = FeatureStats(self.backbone, self.resize, self.dim)
        merged.count = self.count + other.count
        merged.total = self.total + other.total
        merged.outer = self.outer + other.outer
        return merged

    def _require_same_mode(self, other: FeatureStats) -> None:
        mine = (self.backbone, self.resize, self.dim)
        theirs = (other.backbone, other.resize, other.dim)
        if mine != theirs:
            raise FeatureStatsError(
                f"cannot combine feature statistics of different modes: backbone/resize/dim {mine} vs {theirs}"
            )

    @property
    def mean(self) -> np.ndarray:
        if self.count < 1:
            raise FeatureStatsError("the mean of an empty feature set is undefined")
        return self.total / self.count

    @property
    def covariance(self) -> np.ndarray:
        """The unbiased (N - 1) sample covariance; needs at least 2 rows."""
        if self.count < 2:
            raise FeatureStatsError(f"a covariance needs at least 2 feature rows, got {self.count}")
        mean = self.mean
        cov = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        # The raw-sum form is symmetric only up to round-off; sqrtm prefers it exact.
        return (cov + cov.T) / 2

    @property
    def rank_deficient(self) -> bool:
        """True when N <= D: the covariance is singular and the distance leans on SQRTM_EPS."""
        return self.count <= self.dim

    def to_bytes(self) -> bytes:
        """An .npz holding the sums with the backbone, resize mode and dim that produced them."""
        buf = io.BytesIO()
        np.savez(
            buf,
            format=np.array(_STATS_FORMAT),
            backbone=np.array(self.backbone),
            resize=np.array(self.resize),
            dim=np.array(self.dim),
            count=np.array(self.count),
            total=self.total,
            outer=self.outer,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureStats:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                fields = {name: npz[name] for name in npz.files}
        except Exception as e:  # numpy raises several unrelated types for a damaged archive
            raise FeatureStatsError(f"not a feature statistics file: {type(e).__name__}: {e}") from None
        if fields.get("format") is None or str(fields["format"]) != _STATS_FORMAT:
            raise FeatureStatsError(f"not a feature statistics file (expected format {_STATS_FORMAT})")
        stats = cls(str(fields["backbone"]), str(fields["resize"]), int(fields["dim"]))
        total, outer = fields["total"], fields["outer"]
        if total.shape != (stats.dim,) or outer.shape != (stats.dim, stats.dim):
            raise FeatureStatsError(
                f"feature statistics file is inconsistent: dim {stats.dim}, "
                f"sums of shape {total.shape} and {outer.shape}"
            )
        stats.count = int(fields["count"])
        stats.total = total.astype(np.float64)
        stats.outer = outer.astype(np.float64)
        return stats


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = SQRTM_EPS
) -> float:
    """d² = |mu1 - mu2|² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½), computed with scipy's sqrtm.

    Follows pytorch-fid / clean-fid exactly: when the square root of the product is not
    finite (a singular product), `eps` is added to both diagonals and it is taken again;
    imaginary parts from round-off are dropped, but a diagonal imaginary part above
    IMAGINARY_TOLERANCE raises, since it means the inputs are not covariance matrices.
    Never returns NaN: a result that is not finite raises.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"means must be (D,) and covariances (D, D) of one D: got {mu1.shape}, {sigma1.shape}, "
            f"{mu2.shape}, {sigma2.shape}"
        )
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or Inf")

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("sqrtm of the covariance product is not finite; adding %g to the diagonals", eps)
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_TOLERANCE):
            raise ValueError(
                f"the covariance product has a square root with imaginary part up to "
                f"{np.abs(covmean.imag).max():.3g}: are both inputs covariance matrices?"
            )
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    if not np.isfinite(value):
        raise ValueError("the Fréchet distance is not finite even after the eps offset")
    return value


@dataclass(frozen=True)
class FrechetResult:
    """One FID number with everything needed to reproduce or compare it.

    `rank_deficient` is the warning flag for small sets: with N <= D samples on either side
    the covariance is singular and the value is dominated by sample size, so it is only
    comparable with values from sets of the same size. Sets of fewer than 2 samples have
    no covariance at all and `fid` raises instead.
    """

    value: float
    backbone: str
    resize: str
    dim: int
    count: int
    reference_count: int
    rank_deficient: bool

    def to_dict(self) -> dict[str, float | str | int | bool]:
        return asdict(self)


def fid(stats: FeatureStats, reference: FeatureStats) -> FrechetResult:
    """The Fréchet distance between a feature set and a reference of the same mode."""
    stats._require_same_mode(reference)
    for name, s in (("generated", stats), ("reference", reference)):
        if s.count < 2:
            raise FeatureStatsError(f"FID needs at least 2 {name} images, got {s.count}")
    value = frechet_distance(stats.mean, stats.covariance, reference.mean, reference.covariance)
    return FrechetResult(
        value=value,
        backbone=stats.backbone,
        resize=stats.resize,
        dim=stats.dim,
        count=stats.count,
        reference_count=reference.count,
        rank_deficient=stats.rank_deficient or reference.rank_deficient,
    )


class FrechetReference:
    """One reference set prepared for many distances: FID of every group of a run against it.

    Tr((Σg Σr)^½) equals the sum of the square roots of the eigenvalues of Σr^½ Σg Σr^½, a
    symmetric positive semi-definite matrix similar to Σg Σr. So Σr^½ is taken once (one `eigh`)
    and each group then costs one `eigvalsh`, instead of a Schur-based `sqrtm` per group: about
    2x faster for one group and far more for many, which is what a per-class report needs. It agrees
    with `frechet_distance` to ~1e-8 relative (tested), and needs no eps offset for singular sets.
    """

    def __init__(self, reference: FeatureStats):
        if reference.count < 2:
            raise FeatureStatsError(f"FID needs at least 2 reference images, got {reference.count}")
        self.stats = reference
        cov = reference.covariance
        w, v = np.linalg.eigh(cov)
        self._root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        self._trace = float(np.trace(cov))
        self._mean = reference.mean

    def fid(self, stats: FeatureStats) -> FrechetResult:
        stats._require_same_mode(self.stats)
        if stats.count < 2:
            raise FeatureStatsError(f"FID needs at least 2 generated images, got {stats.count}")
        cov = stats.covariance
        product = self._root @ cov @ self._root
        eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
        diff = stats.mean - self._mean
        value = float(diff @ diff + np.trace(cov) + self._trace - 2 * np.sqrt(np.clip(eigenvalues, 0, None)).sum())
        if not np.isfinite(value):
            raise ValueError("the Fréchet distance is not finite")
        return FrechetResult(
            value=max(value, 0.0),
            backbone=stats.backbone,
            resize=stats.resize,
            dim=stats.dim,
            count=stats.count,
            reference_count=self.stats.count,
            rank_deficient=stats.rank_deficient or self.stats.rank_deficient,
        )
