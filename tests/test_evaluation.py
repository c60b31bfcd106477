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
