"""DFR's last-layer recipe (Kirichenko et al.) on features whose answer is known by hand."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from i2x.repair.lastlayer import balanced_subset, features, fit_last_layer, install


def _spurious(n_major: int = 450, n_minor: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two classes; feature 0 is the class with noise, feature 1 is a clean attribute that
    agrees with the class in the majority groups: groups (class, attribute) of sizes
    450 / 50 / 50 / 450."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_major + n_minor), np.ones(n_minor + n_major)].astype(int)
    a = np.r_[np.zeros(n_major), np.ones(n_minor), np.zeros(n_minor), np.ones(n_major)].astype(int)
    z = np.c_[y + rng.normal(0, 0.4, len(y)), a + rng.normal(0, 0.05, len(y))]
    return z, y, 2 * y + a


def test_a_balanced_subset_cuts_every_group_to_the_smallest():
    _, _, g = _spurious()
    part = balanced_subset(g, np.random.default_rng(0))
    assert np.bincount(g[part]).tolist() == [50, 50, 50, 50] and len(np.unique(part)) == 200


def test_balanced_by_true_groups_the_fit_drops_the_attribute_and_lifts_the_worst_group():
    """Planted answer: within group-balanced data the attribute says nothing of the class, so
    the L1 fit gives it (almost) no weight and the minority groups are classified by feature 0;
    balanced by class only, the attribute still agrees with the class 90% of the time and the fit
    leans on it, which costs the minority groups."""
    z, y, g = _spurious()
    test_z, test_y, test_g = _spurious(n_major=900, n_minor=300, seed=1)
    fair = fit_last_layer(z, y, g, 2, seed=0, draws=10)
    by_class = fit_last_layer(z, y, y, 2, seed=0, draws=10, score_groups=g)

    def worst(layer):
        pred = layer.logits(test_z).argmax(1)
        return min((pred == test_y)[test_g == k].mean() for k in range(4))

    assert abs(fair.weight[1, 1]) < 0.2 * abs(fair.weight[1, 0]), fair.weight
    assert abs(by_class.weight[1, 1]) > abs(fair.weight[1, 1]) + 1.0, (by_class.weight, fair.weight)
    assert worst(fair) > 0.8 and worst(fair) > worst(by_class) + 0.1, (worst(fair), worst(by_class))
    assert fair.images == 1000 and fair.balanced == 200 and fair.draws == 10 and set(fair.search) == {100.0, 30.0, 10.0, 3.0, 1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01}


def test_one_draw_of_equal_groups_is_sklearns_fit_on_standardised_features():
    """With every group the same size, a balanced draw is the whole set, so one draw at one C
    is exactly scikit-learn's one-versus-rest L1 logistic regression on the standardised
    features (computed here with StandardScaler), and the folded layer gives the same scores on
    raw features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    z, y, g = _spurious(n_major=100, n_minor=100)
    z = z * [3.0, 0.5] + [10.0, -2.0]  # scale and shift, so the standardisation matters
    layer = fit_last_layer(z, y, g, 3, seed=0, draws=1, c_grid=(0.5,))
    scaled = StandardScaler().fit_transform(z)
    for k in (0, 1):
        ref = LogisticRegression(l1_ratio=1.0, solver="liblinear", C=0.5, random_state=0).fit(scaled, (y == k).astype(int))
        assert np.allclose(layer.logits(z)[:, k], ref.decision_function(scaled), atol=1e-6)
    assert (layer.logits(z)[:, 2] < -1e3).all()  # class 2 has no image: it never wins
    assert layer.c == 0.5 and layer.search == {}


def test_the_layer_is_written_into_the_models_head_and_a_head_without_a_bias_gets_one():
    from i2x.platform.config import ModelConfig
    from i2x.training.models import build_model

    z, y, g = _spurious(n_major=60, n_minor=60)
    layer = fit_last_layer(z, y, g, 2, seed=0, draws=2, c_grid=(1.0,))
    head = nn.Linear(2, 2)
    model = SimpleNamespace(net=SimpleNamespace(fc=head))
    install(model, layer)
    with torch.no_grad():
        assert np.allclose(head(torch.as_tensor(z, dtype=torch.float32)).numpy(), layer.logits(z), atol=1e-4)
    fast = build_model(ModelConfig(name="fastnet", width=8), 1, 2, (0.5,), (0.25,)).eval()
    assert fast.net.fc.bias is None
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    feats = features(fast, x, torch.device("cpu"))
    wide = fit_last_layer(np.r_[feats, feats], np.r_[np.zeros(8), np.ones(8)].astype(int), np.r_[np.zeros(8), np.ones(8)].astype(int),
                          2, seed=0, draws=1, c_grid=(1.0,))
    install(fast, wide)
    assert fast.net.fc.bias is not None
    with torch.no_grad():
        out = fast(x.float() / 255).numpy()
    assert np.allclose(out, wide.logits(feats), atol=1e-3), (out, wide.logits(feats))


@pytest.mark.parametrize("draws", [1, 3])
def test_the_fit_is_the_same_for_the_same_seed(draws):
    z, y, g = _spurious()
    a, b = fit_last_layer(z, y, g, 2, seed=4, draws=draws), fit_last_layer(z, y, g, 2, seed=4, draws=draws)
    assert np.array_equal(a.weight, b.weight) and a.c == b.c
