"""The evaluation of every train run (issue 24): confusion matrix, accuracy per class and the
most-confused pairs, by hand; and the train run logs them."""

import numpy as np

from i2x.training.evaluation import evaluate_predictions, evaluation_metrics


def test_confusion_per_class_and_most_confused_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 0, 2, 2, 0, 2])
    ev = evaluate_predictions(pred, y, 4)
    assert ev.confusion.tolist() == [[1, 2, 0, 0], [1, 1, 0, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
    assert ev.per_class[:3].tolist() == [1 / 3, 1 / 2, 3 / 4] and np.isnan(ev.per_class[3])  # class 3 has no test image
    assert ev.confused == [(0, 1, 2), (1, 0, 1), (2, 0, 1)] and ev.examples == [[1, 2], [4], [7]]
    assert evaluation_metrics(ev, ("cat", "dog", "a+b", "none")) == {"class_accuracy/cat": 1 / 3, "class_accuracy/dog": 0.5,
                                                                     "class_accuracy/a_b": 0.75}


def _captured(monkeypatch, module):
    """The figures a plotting function draws, kept open instead of saved."""
    figs = []

    def keep(fig, path):
        figs.append(fig)
        return path

    monkeypatch.setattr(module, "save_figure", keep)
    return figs


def test_accuracy_bars_start_at_zero_and_carry_their_values(monkeypatch, tmp_path):
    """Issue 43: on Fashion-MNIST the bars started at the lowest class's accuracy (0.62), so
    Shirt at 64.8% looked like an empty bar, and no bar said its value."""
    from i2x.reporting import run_figures

    figs = _captured(monkeypatch, run_figures)
    per_class = np.array([0.912, 0.648, 0.97])
    run_figures.plot_evaluation(np.diag([91, 65, 97]), per_class, ["T-shirt", "Shirt", "Bag"], tmp_path / "c.png")
    bars = figs[0].axes[1]
    assert bars.get_xlim()[0] == 0
    labels = [t.get_text() for t in bars.texts]
    assert labels == ["91.2%", "64.8%", "97.0%"], labels


def test_the_progression_legend_sits_beside_the_lines_not_on_them(monkeypatch, tmp_path):
    """Issue 43: the legend covered the Coat/Shirt line. Now it is outside the axes."""
    from i2x.reporting import figures

    figs = _captured(monkeypatch, figures)
    prog = [{"pair": [a, b], "confusions": [40, 30 - i, 20, 10 + i], "separated_at": None} for i, (a, b) in
            enumerate([("Coat", "Shirt"), ("T-shirt", "Shirt"), ("Pullover", "Coat")])]
    figures.plot_progression(prog, [0, 10, 20, 30], tmp_path / "p.png")
    fig = figs[0]
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1, (legend, ax.get_window_extent())
