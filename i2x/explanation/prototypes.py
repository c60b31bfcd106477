"""Prototypes from the final model's location features (METHOD step 2): PCA, K-Means, assignment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from i2x.platform.errors import I2XError
from i2x.training.pixels import border_level


@dataclass(frozen=True)
class Exemplar:
    """An image region close to a prototype's centre.

    Attributes:
        sample: position in the analysis set.
        cell: ``(row, col)`` on the ``h x w`` grid.
        box: ``(y0, x0, y1, x1)`` pixel footprint of the cell (clipped).
        crop: ``(y0, x0, y1, x1)`` the box with context around it, for pictures.
        distance: distance to the centre in PCA space.
    """

    sample: int
    cell: tuple[int, int]
    box: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]
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


def check_n_prototypes(n_prototypes: int, n: int, h: int, w: int) -> None:
    """K must be at least 2 and at most the ``n * h * w`` feature locations."""
    if n_prototypes > n * h * w:
        raise I2XError(f"explain.n_prototypes={n_prototypes} is larger than the {n * h * w} feature locations ({n} samples x {h}x{w}); "
                       "lower it or raise data.analysis_size")
    if n_prototypes < 2:
        raise I2XError(f"explain.n_prototypes must be at least 2, got {n_prototypes}")


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
    exemplar_context: float = 4.0,
    saliency: np.ndarray | None = None,
) -> Prototypes:
    """PCA + K-Means on location features, then assignment of every location.

    Args:
        features: ``(N, d, h, w)`` target-layer activations of the final model.
        labels: ``(N,)`` class of each sample.
        n_prototypes: K (PAPER: 32 for MNIST, 128 for CIFAR-10).
        pca_components: PCA size (OURS, default 32); capped at d.
        fit_max_locations: fit on a seeded random subsample of at most this many locations.
        exemplar_context: an exemplar's crop spans this many cells around its cell.
        saliency: ``(N, h, w)`` final-checkpoint maps; exemplars are then the prototype's
            most typical, most salient locations (see :func:`_exemplars`).

    Returns:
        :class:`Prototypes`.

    Raises:
        I2XError: K larger than the number of locations.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n, d, h, w = features.shape
    check_n_prototypes(n_prototypes, n, h, w)
    locations = n * h * w
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
    exemplars = _exemplars(assignment, distance, n_prototypes, n_exemplars, image_size, exemplar_context, saliency)
    return Prototypes(protos.pca_mean, protos.pca_components, protos.centers, assignment, distance, presence, coverage, exemplars)


def location_frequency(assignment: np.ndarray, k: int) -> np.ndarray:
    """``(K, h, w)``: where on the grid each prototype occurs, as a share of its locations."""
    n, h, w = assignment.shape
    counts = np.zeros((k, h * w))
    np.add.at(counts, (assignment.reshape(n, -1), np.broadcast_to(np.arange(h * w), (n, h * w))), 1)
    return (counts / np.maximum(counts.sum(1, keepdims=True), 1)).reshape(k, h, w)


def _exemplars(assignment: np.ndarray, distance: np.ndarray, k: int, count: int, image: tuple[int, int], context: float,
               saliency: np.ndarray | None = None) -> list[list[Exemplar]]:
    """Up to ``count`` representative locations per prototype, at most one per sample.

    A location's typicality is how often the prototype occurs at that grid cell; with
    ``saliency`` it is weighted by how much the final model looks there
    (``freq * (0.1 + saliency)``), else the nearest locations to the centre win. The first
    version took the nearest locations only, and on a planted shortcut showed 8 patches
    that contained none of the shortcut's pixels.
    """
    n, h, w = assignment.shape
    flat_a, flat_d = assignment.reshape(-1), distance.reshape(-1)
    positions = np.arange(len(flat_a))
    if saliency is None:
        badness = flat_d
    else:
        freq = location_frequency(assignment, k).reshape(k, -1)
        cell_of = positions % (h * w)
        badness = -(freq[flat_a, cell_of] * (0.1 + saliency.reshape(-1)))
    order = np.lexsort((positions, flat_d, badness, flat_a))  # by prototype, then typicality, distance, position
    bounds = np.searchsorted(flat_a[order], np.arange(k + 1))
    out: list[list[Exemplar]] = []
    for proto in range(k):
        segment = order[bounds[proto] : bounds[proto + 1]]
        samples = segment // (h * w)
        _, first = np.unique(samples, return_index=True)  # best location of each sample
        chosen = segment[np.sort(first)[:count]]
        rows = []
        for pos in chosen:
            sample, rest = divmod(int(pos), h * w)
            cell = divmod(rest, w)
            rows.append(Exemplar(sample, cell, receptive_box(cell, (h, w), image, 1.0), receptive_box(cell, (h, w), image, context),
                                 float(flat_d[pos])))
        out.append(rows)
    return out


NINTHS = (("top-left", "top", "top-right"), ("left", "centre", "right"), ("bottom-left", "bottom", "bottom-right"))
QUARTERS = (("top-left quarter", "top-right quarter"), ("bottom-left quarter", "bottom-right quarter"))
HALVES = {"top half": (0, None), "bottom half": (1, None), "left half": (None, 0), "right half": (None, 1)}


@dataclass(frozen=True)
class Placement:
    """Where a prototype sits in the images of one class.

    Attributes:
        cls: the class (the one it covers most).
        region: the most specific part of the image (a ninth, else a quarter, else a half)
            that holds the centroid of its cells in at least ``min_share`` of the images;
            when none does, the ninth that holds it most often.
        share: the share of that class's images containing it whose centroid lies there.
        n_images: images of the class that contain it.
    """

    cls: int
    region: str
    share: float
    n_images: int


def _part(c: np.ndarray | float, n: int, size: int) -> np.ndarray:
    """Which of ``n`` equal parts of ``size`` grid cells the (mean) cell position ``c`` falls in."""
    return np.minimum(((np.asarray(c) + 0.5) * n / size).astype(int), n - 1)


def placement(assignment: np.ndarray, labels: np.ndarray, k: int, cls: int, min_share: float = 0.8) -> Placement:
    """Where prototype ``k`` sits in the class-``cls`` images that contain it.

    Args:
        assignment: ``(N, h, w)`` prototype ids; labels: ``(N,)``.
        min_share: the share of images a region must hold to be named.
    """
    _, h, w = assignment.shape
    hit = assignment[labels == cls] == k
    hit = hit[hit.reshape(len(hit), -1).any(1)]
    if len(hit) == 0:
        return Placement(cls, "", 0.0, 0)
    counts = hit.sum((1, 2))
    cy = (hit * np.arange(h)[None, :, None]).sum((1, 2)) / counts
    cx = (hit * np.arange(w)[None, None, :]).sum((1, 2)) / counts
    ninth = _part(cy, 3, h) * 3 + _part(cx, 3, w)
    tally = np.bincount(ninth, minlength=9) / len(hit)
    candidates = [(NINTHS[i // 3][i % 3], tally[i]) for i in range(9)]
    quarter = np.bincount(_part(cy, 2, h) * 2 + _part(cx, 2, w), minlength=4) / len(hit)
    candidates += [(QUARTERS[i // 2][i % 2], quarter[i]) for i in range(4)]
    rows, cols = _part(cy, 2, h), _part(cx, 2, w)
    candidates += [(name, float(np.mean(rows == r) if r is not None else np.mean(cols == c))) for name, (r, c) in HALVES.items()]
    for name, share in candidates:  # most specific first
        if share >= min_share:
            return Placement(cls, name, float(share), int(len(hit)))
    best = int(tally.argmax())
    return Placement(cls, NINTHS[best // 3][best % 3], float(tally[best]), int(len(hit)))


def blank_cells(images: torch.Tensor, grid: tuple[int, int], max_std: float, max_offset: float = 0.1) -> np.ndarray:
    """``(N, h, w)`` bool: empty-canvas cells, whose pixels are near-constant (the largest
    per-channel standard deviation below ``max_std``) at the image's background level (within
    ``max_offset`` of the median border pixel), all in [0, 1] pixel units. A solid planted
    mark is near-constant too, but not at the background level, so it is not blank.

    Args:
        images: ``(N, C, H, W)`` uint8.
    """
    x = images.float() / 255
    mean = torch.nn.functional.adaptive_avg_pool2d(x, grid)
    square = torch.nn.functional.adaptive_avg_pool2d(x * x, grid)
    std = (square - mean * mean).clamp_min(0).sqrt().amax(1)
    offset = (mean - border_level(x)[..., None, None]).abs().amax(1)
    return ((std < max_std) & (offset < max_offset)).numpy()


def content_background(assignment: np.ndarray, blank: np.ndarray, blank_share: float, ring_share: float) -> dict[int, str]:
    """Prototypes that are background by what they cover, not only by how common they are:
    ``blank`` when at least ``blank_share`` of their cells are near-constant, ``border ring``
    when at least ``ring_share`` of their cells lie on the grid's outer ring spread over three
    or more sides (a mark in one corner touches at most two sides and is kept).

    Args:
        assignment: ``(N, h, w)``; blank: ``(N, h, w)`` from :func:`blank_cells`.

    Returns:
        prototype id -> reason.
    """
    _, h, w = assignment.shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    sides = np.stack([rows == 0, rows == h - 1, cols == 0, cols == w - 1])  # (4, h, w)
    ring = sides.any(0)
    out: dict[int, str] = {}
    for k in np.unique(assignment):
        mine = assignment == k
        n = mine.sum()
        if blank[mine].mean() >= blank_share:
            out[int(k)] = "blank"
            continue
        per_cell = mine.sum(0)
        on_ring = per_cell[ring].sum() / n
        side_share = np.array([per_cell[s].sum() / n for s in sides])
        if on_ring >= ring_share and (side_share >= 0.1).sum() >= 3:
            out[int(k)] = "border ring"
    return out


def cells_box(assignment: np.ndarray, k: int, image: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``(y0, x0, y1, x1)`` pixel box around every grid cell of one image assigned to
    prototype ``k`` (where the prototype is in that image, not one cell of it); None when
    the image has none.

    Args:
        assignment: ``(h, w)`` prototype ids of one image; image: ``(H, W)``.
    """
    rows, cols = np.nonzero(assignment == k)
    if len(rows) == 0:
        return None
    (h, w), (height, width) = assignment.shape, image
    return (int(rows.min() * height // h), int(cols.min() * width // w),
            int(-(-(rows.max() + 1) * height // h)), int(-(-(cols.max() + 1) * width // w)))


def off_object(assignment: np.ndarray, labels: np.ndarray, blank: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``(K,)``: where prototype k sits in its class's images, the share of the *other*
    classes' images that are blank canvas (:func:`blank_cells`), over its core (the cells where
    it is at least half as often as at its most frequent cell), weighted by frequency. Near 1: the cue sits where the other classes have nothing, off the objects
    (a mark in an empty corner); a part of the object sits where others have ink too.

    Args:
        assignment: ``(N, h, w)``; labels: ``(N,)``; blank: ``(N, h, w)`` bool;
        classes: ``(K,)`` the class each prototype is read in (its most covered).
    """
    out = np.zeros(len(classes))
    for k, c in enumerate(classes):
        freq = (assignment[labels == c] == k).mean(0)
        others = labels != c
        if freq.sum() == 0 or not others.any():
            continue
        core = freq * (freq >= 0.5 * freq.max())  # where it usually is, not every cell it ever touches
        out[k] = float((core * blank[others].mean(0)).sum() / core.sum())
    return out
