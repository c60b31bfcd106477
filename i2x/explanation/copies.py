"""Rigid copies: the same pixels at one place in a share of one class's images, and whether
the final model uses them (OURS; the paper has no such step).

Prototypes are clusters of the final model's feature cells, so a mark on a tenth of one
class's images is a few hundred cells among a hundred thousand and gets no prototype of its
own (CIFAR-10, ``docs/history.md#detection-power``); the prototype-based shortcut check then
has nothing to check. This step looks at the pixels instead. For every window (half a grid
cell on a side, tiling the image) it takes the commonest patches there over all images, chosen
without the labels, and counts per class the images that hold each to within
``copy_tolerance`` (a pasted mark is exact; natural content varies), against the share of the
other classes' images that hold it. Per class and window the patch most enriched in the class
and unlike the mean image is a **candidate**. The scan keeps the most enriched of thousands of
(patch, class) pairs, so on labels that carry nothing (a model trained on shuffled labels) it
still returns white sky that one class holds a little more often by chance; a candidate is
therefore **enriched** only where a one-sided hypergeometric (Fisher) test of its holders'
classes, corrected for every (patch, class) pair tested, passes ``alpha``: by label
permutation (:func:`min_p`; the tests are many and alike: the same sky in neighbouring
windows), or Bonferroni.
Each is tested on the final model: its footprint (the pixels within a grid cell of the window
that stay the same across the images holding it, which need not follow the grid) is pasted from those images into other classes' images that do
not hold it, and the model's calls of the class are counted against a **control** that pastes
the same pixels from the class's other images (its ordinary content there). A copy is
**verified** when it is enriched, the paired excess is at least ``copy_min_push`` and a
one-sided sign test on the discordant pairs passes Benjamini-Hochberg at ``alpha`` across the
candidates tested. (The paste test is right about the model either way: a model that memorised
shuffled labels does read white sky as "dog"; what is false is calling it a copy *in the dog
images*.)

Group labels are never read: the scan uses the analysis images and their class labels only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import gammaln
from scipy.stats import binomtest, hypergeom

from i2x.explanation.nulls import benjamini_hochberg
from i2x.explanation.prototypes import NINTHS, _part
from i2x.platform.config import FaithfulnessConfig
from i2x.training.loop import predictions
from i2x.training.pixels import border_level


@dataclass
class Copy:
    """One candidate rigid copy and its paste test (``tested`` False: not reached)."""

    cls: int
    window: tuple[int, int, int, int]  # (y0, y1, x0, x1) of the scanned window it was found in
    images: int  # images of the class that hold it
    share: float  # ... as a share of the class's analysed images
    others: float  # share of the other classes' images that hold it
    enrichment_p: float  # one-sided hypergeometric p of the holders' class, corrected for the scan's tests (min_p, or Bonferroni)
    box: tuple[int, int, int, int]  # (y0, x0, y1, x1) of the footprint, end exclusive
    pixels: int  # footprint size
    where: str  # the ninth of the image the footprint's centre lies in
    control: str = "its class"  # whose pixels the control pastes: the class's other images, or other classes' (none left)
    off_object: float | None = None  # share of other classes' images blank where it is (None: no blank canvas)
    reference: np.ndarray | None = None  # (C, bh, bw) the copy's pixels in its box (median of its images), [0, 1]
    mask: np.ndarray | None = None  # (bh, bw) bool: which of the box's pixels are the copy
    exemplars: tuple[int, ...] = ()  # positions in the analysed images of a few that hold it (the figure's)
    scan_tries: int = 0  # (patch, class) enrichment tests the scan made, all corrected for
    scan_permutations: int = 0  # label shuffles of that correction (0: Bonferroni, times scan_tries)
    tested: bool = False
    n_pairs: int = 0
    flips: float = 0.0  # share of recipients the pasted copy turns to the class
    control_flips: float = 0.0
    push: float = 0.0  # flips - control_flips
    ci: tuple[float, float] = (0.0, 0.0)
    p: float = 1.0
    p_adjusted: float = 1.0
    verified: bool = False


def windows(size: tuple[int, int], grid: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` of the square windows scanned: half a grid cell on a side (at least
    one pixel), tiling the image, so that any copy at least one and a half cells wide covers
    one whole (a 3-pixel mark on a 4-pixel grid covers no cell whole)."""
    side = max(1, min(size[0] // grid[0], size[1] // grid[1]) // 2)
    return [(y, min(y + side, size[0]), x, min(x + side, size[1])) for y in range(0, size[0], side) for x in range(0, size[1], side)]


def _same(values: np.ndarray, ref: np.ndarray, tolerance: float) -> np.ndarray:
    """``(N,)`` bool: the images whose ``values`` (``(N, ...)``) are within ``tolerance`` of
    ``ref`` in 98% of them: the one test of holding a copy (the scan, the paste test, tune)."""
    return (np.abs(values - ref).reshape(len(values), -1) <= tolerance).mean(1) >= 0.98


def scan(x: np.ndarray, labels: np.ndarray, grid: tuple[int, int], tolerance: float, min_images: int,
         min_contrast: float = 0.25, tries: int = 3, permutations: int = 999,
         seed: int = 0) -> tuple[list[tuple[float, int, tuple[int, int, int, int], np.ndarray, float]], int]:
    """Candidates ``(excess share, class, window, holders in the class, enrichment p)``, best
    first, and the number of (patch, class) enrichment tests made.

    The patches are chosen without the labels, so that the enrichment test is exact: per
    window (:func:`windows`), the commonest patches over all images (quantised to 0.1; ``tries``
    per class, at least ``min_images`` images each) whose values differ from the mean image
    there by ``min_contrast`` on average (blank canvas is the same everywhere). Each is tested
    in every class: the hypergeometric chance, were the labels exchangeable, that at least as
    many of its holders (images within ``tolerance``) fall in the class. The enrichment p is
    that chance corrected for every test the scan made: by :func:`min_p` over ``permutations``
    shuffles of the labels, or Bonferroni (times the tests) with ``permutations`` 0.
    Per class and window the patch most enriched (share in the class minus share in the
    others) is kept, where at least ``min_images`` of the class hold it. (Choosing each class's
    own commonest patch, as this scan first did, selects on the labels: on shuffled labels its
    corrected p fell below 0.05 for a "frog" strip.) ``x``: ``(N, C, H, W)`` pixels in [0, 1]."""
    size, n = tuple(x.shape[-2:]), len(labels)
    classes = [int(c) for c in np.unique(labels)]
    if len(classes) < 2:
        return [], 0
    member = labels[None, :] == np.array(classes)[:, None]  # (K, N)
    sizes = member.sum(1)
    mean = x.mean(0)
    found, held, counted = [], [], []
    for box in windows(size, grid):
        y0, y1, x0, x1 = box
        patch = x[:, :, y0:y1, x0:x1].reshape(n, -1)
        _, inverse, counts = np.unique(np.round(patch * 10).astype(np.int8), axis=0, return_inverse=True, return_counts=True)
        best: dict[int, tuple[float, int, tuple[int, int, int, int], np.ndarray, int]] = {}
        for j in np.argsort(-counts, kind="stable")[:tries * len(classes)]:
            if counts[j] < min_images:
                break
            ref = patch[inverse.reshape(-1) == j].mean(0)
            if np.abs(ref - mean[:, y0:y1, x0:x1].reshape(-1)).mean() < min_contrast:
                continue
            holders = _same(patch, ref, tolerance)
            held.append(holders)
            inside, total = (member & holders).sum(1), int(holders.sum())
            counted.append(inside)
            for k, c in enumerate(classes):
                excess = inside[k] / sizes[k] - (total - inside[k]) / (n - sizes[k])
                if inside[k] >= min_images and excess > 0 and (c not in best or excess > best[c][0]):
                    best[c] = (float(excess), c, box, holders & member[k], len(held) - 1)
        found.extend(best.values())
    if not held:
        return [], 0
    holding = np.stack(held)  # (P, N): every patch tested, label-free
    raw = hypergeom.sf(np.stack(counted) - 1, n, sizes[None, :], holding.sum(1)[:, None])  # (P, K), uncorrected
    tried = raw.size
    family = min_p(holding, labels, classes, permutations, seed) if permutations else None
    out = []
    for excess, c, box, inside, j in found:
        p = float(raw[j, classes.index(c)])
        out.append((excess, c, box, inside, family(p) if family else min(1.0, p * tried)))
    return sorted(out, key=lambda b: -b[0]), tried


def min_p(holding: np.ndarray, labels: np.ndarray, classes: list[int], permutations: int, seed: int,
          chunk: int = 50) -> Callable[[float], float]:
    """The family-wise correction of the scan's hypergeometric p's (Westfall and Young's min-P):
    a function from a raw p to the share of ``permutations`` label shuffles (plus the observed
    labels) whose smallest p over all ``holding`` x ``classes`` tests is at most it. The
    patches were chosen without the labels, so every shuffle is as likely under the null, and
    the correction is exact; unlike Bonferroni it pays only for the tests' real number (the
    same sky in neighbouring windows is one test, not many). ``holding``: ``(P, N)`` bool.

    Each test's p is read from a table over the holder counts a shuffle can reach, from the
    count expected by chance (below it p is at least about a half, set to 1: with thousands of
    tests the smallest p of a shuffle never comes from there) to ten standard deviations above
    the widest test's, summed from the exact probabilities and the exact tail beyond; counts
    beyond the table are computed exactly. A shuffle costs the number of holders, not
    patches x images."""
    n = holding.shape[1]
    sizes = np.array([(labels == c).sum() for c in classes])
    totals = holding.sum(1)
    expected = totals[:, None] * sizes[None, :] / n  # (P, K)
    sd = np.sqrt(expected * (1 - sizes[None, :] / n) * (n - totals[:, None]) / max(1, n - 1))
    lo = np.floor(expected).astype(np.int64)
    hi = np.minimum(np.ceil(expected + 10 * sd).astype(np.int64) + 1, np.minimum(totals[:, None], sizes[None, :]))
    span = int((hi - lo).max()) + 1
    counts = lo[..., None] + np.arange(span)  # (P, K, span)
    s, t = sizes[None, :, None], totals[:, None, None]
    possible = (counts <= s) & (counts <= t) & (t - counts <= n - s)
    k = np.where(possible, counts, 0)
    log_pmf = _log_choose(s, k) + _log_choose(n - s, t - k) - _log_choose(n, t)  # hypergeometric, exact in logs
    pmf = np.where(possible, np.exp(log_pmf), 0.0)
    pmf[..., -1] = hypergeom.sf(counts[..., -1] - 1, n, s[..., 0], t[..., 0])  # the last column: its whole tail
    table = np.cumsum(pmf[..., ::-1], -1)[..., ::-1]  # P(at least that count), summed from the rare end
    rng = np.random.default_rng(seed)
    code = np.searchsorted(np.array(classes), labels)  # each image's class as 0..K-1
    who, image = np.nonzero(holding)  # the holders, as (patch, image) pairs: a shuffle costs their number, not P x N
    stride = len(holding) * len(classes)
    chunk = max(1, min(chunk, 2 ** 24 // max(1, len(who))))  # the keys of a chunk in about 128 MB
    smallest = []
    for start in range(0, permutations, chunk):
        b = min(chunk, permutations - start)
        shuffled = np.stack([rng.permutation(code) for _ in range(b)])  # (b, N)
        keys = np.arange(b)[:, None] * stride + who[None] * len(classes) + shuffled[:, image]
        inside = np.bincount(keys.reshape(-1), minlength=b * stride).reshape(b, len(holding), len(classes))  # (b, P, K)
        at = inside - lo[None]
        ok = (at >= 0) & (at < span)
        p = np.ones(inside.shape)
        sel = np.nonzero(ok)
        p[sel] = table[sel[1], sel[2], at[sel]]
        far = np.nonzero(at >= span)
        if len(far[0]):
            p[far] = hypergeom.sf(inside[far] - 1, n, sizes[far[2]], totals[far[1]])
        smallest.append(p.reshape(b, -1).min(1))
    floor = np.sort(np.concatenate(smallest)) if smallest else np.zeros(0)

    def corrected(p: float) -> float:
        return float((1 + np.searchsorted(floor, p * (1 + 1e-9), side="right")) / (1 + len(floor)))

    return corrected


def _log_choose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)


def footprint(x: np.ndarray, holders: np.ndarray, box: tuple[int, int, int, int], reach: int, tolerance: float,
              share: float = 0.75) -> np.ndarray:
    """``(H, W)`` bool: the pixels within ``reach`` of the window ``box`` that stay within
    ``tolerance`` of their median in ``share`` of the holders, in every channel: the copy's own
    outline, which need not follow the grid (a 5-pixel mark covers parts of four 4-pixel cells)."""
    (height, width), (y0, y1, x0, x1) = x.shape[-2:], box
    wy0, wy1, wx0, wx1 = max(0, y0 - reach), min(height, y1 + reach), max(0, x0 - reach), min(width, x1 + reach)
    win = x[holders, :, wy0:wy1, wx0:wx1]
    mask = np.zeros((height, width), dtype=bool)
    mask[wy0:wy1, wx0:wx1] = ((np.abs(win - np.median(win, 0)) <= tolerance).mean(0) >= share).all(0)
    return mask


def has_canvas(blank: np.ndarray, share: float = 0.5) -> bool:
    """Whether the images have blank canvas: at least ``share`` of their pixels are their
    border colour (MNIST about 0.8; photographs well under half)."""
    return bool(blank.mean() >= share)


def find_copies(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, grid: tuple[int, int], cfg: FaithfulnessConfig,
                seed: int, device: torch.device, batch_size: int = 256, off_object: float = 0.4) -> list[Copy]:
    """Scan for rigid copies and paste-test the best ``cfg.copy_tests`` of them on ``model``
    (the final model): what the module docstring describes. A candidate whose window lies in the
    footprint of a better one of the same class is the same copy and is dropped. On images with
    blank canvas (:func:`has_canvas`) a copy must also sit off the objects: at least
    ``off_object`` of the other classes' images blank where it is, the condition a prototype's
    shortcut check has (``explain.shortcut_off_object``); there a solid stroke of a digit is an
    exact copy too (ink saturates), and pasting one pushes its class."""
    y = labels.numpy()
    x = images.float().numpy() / 255
    level = border_level(torch.from_numpy(x)).numpy()[:, :, None, None]
    blank = (np.abs(x - level) < cfg.foreground_threshold).all(1)  # (N, H, W): the image's background colour
    canvas = has_canvas(blank)
    rng = np.random.default_rng(seed)
    model = model.eval().to(device)
    found: list[Copy] = []
    masks: list[np.ndarray] = []
    holders_of: list[np.ndarray] = []
    reach = max(1, min(x.shape[-2] // grid[0], x.shape[-1] // grid[1]))  # one grid cell round the window
    candidates, tries = scan(x, y, grid, cfg.copy_tolerance, cfg.copy_min_images, permutations=cfg.copy_permutations, seed=seed)
    for _, c, box, holders, enrichment in candidates:
        if len(found) >= cfg.copy_tests:
            break
        if any(f.cls == c and m[box[0]:box[1], box[2]:box[3]].any() for f, m in zip(found, masks, strict=True)):
            continue
        mask = footprint(x, holders, box, reach, cfg.copy_tolerance)
        if not mask.any() or blank[holders][:, mask].mean() > 0.5:  # canvas inside or round an object is not a copy
            continue
        off = float(blank[y != c][:, mask].all(1).mean()) if canvas else None
        if off is not None and off < off_object:
            continue
        ys, xs = np.nonzero(mask)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        where = NINTHS[int(_part(cy, 3, x.shape[-2]))][int(_part(cx, 3, x.shape[-1]))]
        found.append(Copy(cls=c, window=box, images=int(holders.sum()), share=float(holders.sum() / (y == c).sum()),
                          others=0.0, enrichment_p=enrichment, scan_tries=tries,
                          scan_permutations=cfg.copy_permutations, box=(int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1), pixels=int(mask.sum()),
                          where=where, off_object=off, exemplars=tuple(int(i) for i in np.sort(rng.choice(np.flatnonzero(holders), size=min(4, int(holders.sum())),
                                                                                           replace=False)))))
        y0, x0, y1, x1 = found[-1].box
        found[-1].reference = np.median(x[holders, :, y0:y1, x0:x1], 0)
        found[-1].mask = mask[y0:y1, x0:x1]
        masks.append(mask)
        holders_of.append(holders)
    for f, mask, holders in zip(found, masks, holders_of, strict=True):
        _paste_test(f, model, images, x, y, mask, holders, cfg, rng, device, batch_size)
    tested = [f for f in found if f.tested]
    for f, p in zip(tested, benjamini_hochberg(np.array([f.p for f in tested])), strict=True):
        f.p_adjusted = float(p)
        f.verified = bool(p < cfg.alpha and f.push >= cfg.copy_min_push and f.enrichment_p < cfg.alpha)
    return found


def _paste_test(f: Copy, model: torch.nn.Module, images: torch.Tensor, x: np.ndarray, y: np.ndarray, mask: np.ndarray,
                holders: np.ndarray, cfg: FaithfulnessConfig, rng: np.random.Generator, device: torch.device, batch: int) -> None:
    """Paste ``f``'s footprint from its holders into other classes' images that do not hold it,
    against the same pixels from the class's images that do not (in place on ``f``); ``x`` is
    ``images`` in [0, 1]."""
    assert f.reference is not None and f.mask is not None
    same = _same(x[:, :, mask], f.reference[:, f.mask], cfg.copy_tolerance)
    f.others = float(same[y != f.cls].mean())
    donors, plain, pool = np.flatnonzero(holders), np.flatnonzero(~same & (y == f.cls)), np.flatnonzero(~same & (y != f.cls))
    if len(plain) < cfg.copy_min_images:  # every image of the class holds it: the control pastes other classes' pixels there
        plain, f.control = pool, "other classes"
    if len(pool) < cfg.copy_min_images:
        return
    take = rng.choice(pool, size=min(cfg.copy_recipients, len(pool)), replace=False)
    already = predictions(model, images[take], batch, device).numpy() == f.cls
    take = take[~already]
    m = torch.from_numpy(mask)
    turned = {}
    for name, source in (("copy", donors), ("control", plain)):
        z = images[take].clone()
        z[:, :, m] = images[torch.from_numpy(rng.choice(source, size=len(take)))][:, :, m]
        turned[name] = predictions(model, z, batch, device).numpy() == f.cls
    a, b = turned["copy"], turned["control"]
    d = a.astype(float) - b
    boot = d[rng.integers(0, len(d), size=(cfg.bootstrap, len(d)))].mean(1) if len(d) else np.zeros(1)
    up, down = int((a & ~b).sum()), int((~a & b).sum())
    f.tested, f.n_pairs = True, int(len(take))
    f.flips, f.control_flips, f.push = float(a.mean()), float(b.mean()), float(d.mean())
    f.ci = (float(np.quantile(boot, (1 - cfg.ci) / 2)), float(np.quantile(boot, 1 - (1 - cfg.ci) / 2)))
    f.p = float(binomtest(up, up + down, 0.5, alternative="greater").pvalue) if up + down else 1.0


def copy_cells(images: torch.Tensor, row: dict, grid: tuple[int, int], tolerance: float) -> torch.Tensor:
    """``(N, h, w)`` bool: the grid cells a stated copy (a document row: ``box``, ``mask``,
    ``reference``) covers, in the images that hold it (its pixels within ``tolerance`` of the
    reference in 98% of values): where a repair acts, as a prototype's cells are for a
    prototype's check."""
    y0, x0, y1, x1 = row["box"]
    mask, ref = np.asarray(row["mask"], dtype=bool), np.asarray(row["reference"], dtype=np.float32)
    x = images[:, :, y0:y1, x0:x1].float().numpy() / 255
    held = _same(x[:, :, mask], ref[:, mask], tolerance)
    (height, width), (h, w) = images.shape[-2:], grid
    cover = np.zeros((h, w), dtype=bool)
    ys, xs = np.nonzero(mask)
    cover[(y0 + ys) * h // height, (x0 + xs) * w // width] = True
    return torch.from_numpy(held[:, None, None] & cover[None])
