import numpy as np
import pytest

from i2x.patterns import GroupFit
from i2x.structure import build_structure, oscillation, pair_progression, uncertainty_scores


def test_oscillation_by_hand():
    assert oscillation(np.array([1.0, -1.0, 1.0])) == pytest.approx(2 / 3)
    assert oscillation(np.array([1.0, 2.0, 3.0])) == 0.0
    assert oscillation(np.array([2.0, -2.0])) == pytest.approx(0.5)
    assert oscillation(np.zeros(3)) == 0.0


def test_uncertainty_score_uses_top_two_classes_and_share():
    # one prototype, 3 classes, 3 intervals: pushes class 0 vs 1 back and forth
    interval_beta = np.zeros((3, 1, 3))
    interval_beta[:, 0, 0] = [1.0, -1.0, 1.0]
    abs_mass = np.array([[3.0, 0.0, 1.0]])
    (score,) = uncertainty_scores(interval_beta, abs_mass)
    assert score.pair == (0, 2)
    d = interval_beta[:, 0, 0] - interval_beta[:, 0, 2]
    assert score.d == d.tolist()
    assert score.share == pytest.approx(1.0)
    assert score.score == pytest.approx(oscillation(d))


def test_pair_progression_separation_checkpoint():
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([
        [1, 1, 0, 0, 2],  # 4 confusions of (0,1)
        [0, 1, 0, 1, 2],  # 2
        [0, 0, 1, 1, 2],  # 0
        [0, 0, 1, 1, 2],
    ])
    interval_beta = np.zeros((3, 2, 3))
    interval_beta[1, 0, 0], interval_beta[1, 1, 1] = 0.5, 0.7
    prog = {(p.a, p.b): p for p in pair_progression(preds, labels, interval_beta, ratio=0.25, top=2)}
    assert prog[(0, 1)].confusions == [4, 2, 0, 0]
    assert prog[(0, 1)].separated_at == 2
    assert prog[(0, 1)].toward_a == [(0, 0.5)] and prog[(0, 1)].toward_b == [(1, -0.7)]
    assert prog[(0, 2)].separated_at == 0  # never confused
    never = pair_progression(np.array([[1, 0], [1, 0], [1, 0]]), np.array([0, 1]), np.zeros((2, 1, 2)), 0.25, 1)
    assert never[0].separated_at is None


def test_shared_and_specialised_prototypes():
    # 2 classes, 3 prototypes, one interval. Class 0 has two variants (samples 0-9, 10-19):
    # prototype 1 is in every class-0 sample (shared); prototype 2 only in variant A.
    n = 30
    labels = np.array([0] * 20 + [1] * 10)
    presence = np.zeros((n, 3), dtype=bool)
    presence[:20, 1] = True
    presence[:10, 2] = True
    presence[20:, 0] = True
    coverage = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.0]])
    beta_a = np.array([[0.0, 0.2], [0.3, -0.1], [0.4, 0.0]])
    beta_b = np.array([[0.0, 0.2], [0.3, -0.1], [-0.1, 0.0]])
    beta_c = np.array([[0.0, 0.5], [-0.2, 0.1], [0.0, 0.0]])
    fits = [GroupFit(0, 0, np.arange(10), beta_a, None), GroupFit(0, 1, np.arange(10, 20), beta_b, None), GroupFit(0, 2, np.arange(20, 30), beta_c, None)]
    groups = np.array([[0] * 10 + [1] * 10 + [2] * 10])
    preds = np.vstack([labels, labels])
    s = build_structure(fits, groups, presence, coverage, labels, preds, uncertain_threshold=0.3)
    assert s.shared[0] == [1] and s.shared[1] == [0]
    assert [sp.prototype for sp in s.specialised[0]] == [2] and s.specialised[1] == []
    assert s.specialised[0][0].group == 0 and s.specialised[0][0].group_coverage == 1.0
    # evidence: size-weighted sum (each group is 1/3 of the samples)
    np.testing.assert_allclose(s.evidence, (beta_a + beta_b + beta_c) / 3)
