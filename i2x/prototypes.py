"""Prototypes from the final model's location features (METHOD step 2): PCA, K-Means, assignment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from i2x.errors import I2XError


@dataclass(frozen=True)
class Exemplar:
    """An image region close to a prototype's centre.

    Attributes:
        sample: position in the analysis set.
        cell: ``(row, col)`` on the ``h x w`` grid.
        box: ``(y0, x0, y1, x1)`` pixel box of the cell's receptive field (clipped).
        distance: distance to the centre in PCA space.
    """

    sample: int
    cell: tuple[int, int]
    box: tuple[int, int, int, int]
    distance: float


@dataclass(frozen=True)
class Prototypes:
    """The fitted prototypes and the assignment of every analysed location.

    Attributes:
        pca_mean: ``(d,)``; pca_components: ``(p, d)``; centers: ``(K, p)``.
        assignment: ``(N, h, w)`` int64 in ``0..K-1`` (A in the method).
        distance: ``(N, h, w)`` distance of each location to its centre.
        presence: ``(N, K)`` bool, prototype k occurs somewhere in sample i.
        coverage: ``(K, M)`` share of class-c samples that contain k.
        exemplars: per prototype, up to ``n_exemplars`` regions, nearest first.
    """

    pca_mean: np.ndarray
    pca_components: np.ndarray
    centers: np.ndarray
    assignment: np.ndarray
    distance: np.ndarray
    presence: np.ndarray
    coverage: np.ndarray
    exemplars: list[list[Exemplar]]

    @property
    def k(self) -> int:
        return int(self.centers.shape[0])

    def project(self, features: torch.Tensor) -> np.ndarray:
        """``(N, d, h, w)`` features -> ``(N*h*w, p)`` PCA coordinates."""
        flat = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).numpy().astype(np.float32)
        return (flat - self.pca_mean) @ self.pca_components.T

    def assign(self, features: torch.Tensor, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centre of every location of new features: ``(N, h, w)`` ids and distances."""
        n, _, h, w = features.shape
        z = self.project(features)
        ids = np.empty(len(z), dtype=np.int64)
        dist = np.empty(len(z), dtype=np.float32)
        c2 = (self.centers**2).sum(1)
        for s in range(0, len(z), chunk):
            block = z[s : s + chunk]
            d2 = (block**2).sum(1, keepdims=True) - 2 * block @ self.centers.T + c2
            ids[s : s + chunk] = d2.argmin(1)
            dist[s : s + chunk] = np.sqrt(np.maximum(d2.min(1), 0))
        return ids.reshape(n, h, w), dist.reshape(n, h, w)


def receptive_box(cell: tuple[int, int], grid: tuple[int, int], image: tuple[int, int], context: float) -> tuple[int, int, int, int]:
    """Pixel box around grid cell ``cell``: the cell's footprint scaled by ``context``."""
    (r, c), (h, w), (hh, ww) = cell, grid, image
    sy, sx = hh / h, ww / w
    cy, cx = (r + 0.5) * sy, (c + 0.5) * sx
    half_y, half_x = context * sy / 2, context * sx / 2
    return (max(0, int(round(cy - half_y))), max(0, int(round(cx - half_x))),
            min(hh, int(round(cy + half_y))), min(ww, int(round(cx + half_x))))


def fit_prototypes(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    n_prototypes: int,
    pca_components: int,
    fit_max_locations: int,
    n_exemplars: int,
    seed: int,
    image_size: tuple[int, int],
    kmeans_n_init: int = 3,
    exemplar_context: float = 2.0,
) -> Prototypes:
    """PCA + K-Means on location features, then assignment of every location.

    Args:
        features: ``(N, d, h, w)`` target-layer activations of the final model.
        labels: ``(N,)`` class of each sample.
        n_prototypes: K (PAPER: 32 for MNIST, 128 for CIFAR-10).
        pca_components: PCA size (OURS, default 32); capped at d.
        fit_max_locations: fit on a seeded random subsample of at most this many locations.

    Returns:
        :class:`Prototypes`.

    Raises:
        I2XError: K larger than the number of locations.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n, d, h, w = features.shape
    locations = n * h * w
    if n_prototypes > locations:
        raise I2XError(f"explain.n_prototypes={n_prototypes} is larger than the {locations} feature locations ({n} samples x {h}x{w}); lower it or raise data.analysis_size")
    if n_prototypes < 2:
        raise I2XError(f"explain.n_prototypes must be at least 2, got {n_prototypes}")
    flat = features.permute(0, 2, 3, 1).reshape(-1, d).numpy().astype(np.float32)
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(locations, size=min(locations, fit_max_locations), replace=False))
    fit = flat[fit_rows]
    p = min(pca_components, d, len(fit))
    pca = PCA(n_components=p, random_state=seed).fit(fit)
    z_fit = pca.transform(fit).astype(np.float32)
    km = KMeans(n_clusters=n_prototypes, n_init=kmeans_n_init, random_state=seed).fit(z_fit)
    protos = Prototypes(
        pca_mean=pca.mean_.astype(np.float32),
        pca_components=pca.components_.astype(np.float32),
        centers=km.cluster_centers_.astype(np.float32),
        assignment=np.empty(0), distance=np.empty(0), presence=np.empty(0), coverage=np.empty(0), exemplars=[],
    )
    assignment, distance = protos.assign(features)
    presence = np.zeros((n, n_prototypes), dtype=bool)
    presence[np.repeat(np.arange(n), h * w), assignment.reshape(-1)] = True
    y = labels.numpy()
    coverage = np.zeros((n_prototypes, num_classes), dtype=np.float64)
    for c in range(num_classes):
        members = y == c
        if members.any():
            coverage[:, c] = presence[members].mean(0)
    exemplars = _exemplars(assignment, distance, n_prototypes, n_exemplars, image_size, exemplar_context)
    return Prototypes(protos.pca_mean, protos.pca_components, protos.centers, assignment, distance, presence, coverage, exemplars)


def _exemplars(assignment: np.ndarray, distance: np.ndarray, k: int, count: int, image: tuple[int, int], context: float) -> list[list[Exemplar]]:
    """The ``count`` nearest locations per prototype, at most one per sample."""
    n, h, w = assignment.shape
    flat_a, flat_d = assignment.reshape(-1), distance.reshape(-1)
    positions = np.arange(len(flat_a))
    order = np.lexsort((positions, flat_d, flat_a))  # by prototype, then distance, then position
    bounds = np.searchsorted(flat_a[order], np.arange(k + 1))
    out: list[list[Exemplar]] = []
    for proto in range(k):
        segment = order[bounds[proto] : bounds[proto + 1]]
        samples = segment // (h * w)
        _, first = np.unique(samples, return_index=True)  # nearest location of each sample
        chosen = segment[np.sort(first)[:count]]
        rows = []
        for pos in chosen:
            sample, rest = divmod(int(pos), h * w)
            cell = divmod(rest, w)
            rows.append(Exemplar(sample, cell, receptive_box(cell, (h, w), image, context), float(flat_d[pos])))
        out.append(rows)
    return out
