"""Group metrics (issue 21): accuracies per group, worst group and the aligned/conflicting gap
on hand-built cases; a user's group file read, and a bad one refused in one line."""

import numpy as np
import pytest

from i2x.platform.config import PlantConfig
from i2x.platform.errors import I2XError
from i2x.training.groups import group_metrics, group_table, planted_groups, read_group_file


def test_planted_groups_and_their_metrics_by_hand():
    # 2 classes; class 1 carries the shortcut. Test images: (class, mark) =
    # (0,no) x3, (0,yes) x2, (1,no) x2, (1,yes) x3
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    marks = np.full((10, 4), -1)
    marks[[3, 4, 7, 8, 9], 0] = 1
    groups = planted_groups(PlantConfig(kind="shortcut", classes=(1,)), ("cat", "dog"), y, marks)
    assert groups.names == ("cat without mark", "cat with mark", "dog without mark", "dog with mark")
    assert groups.aligned == (True, False, False, True)
    assert groups.of_image.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    # the model follows the mark: right on aligned images, wrong on the conflicting ones but one
    pred = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1])
    rows = group_table(pred, y, groups)
    assert [(r["images"], r["correct"]) for r in rows] == [(3, 3), (2, 1), (2, 1), (3, 3)]
    m = group_metrics(rows)
    assert m["worst_group_accuracy"] == 0.5
    assert m["group_accuracy/cat with mark"] == 0.5 and m["group_accuracy/dog with mark"] == 1.0
    assert m["aligned_accuracy"] == 1.0 and m["conflicting_accuracy"] == 0.5  # 6/6 and 2/4
    assert m["aligned_conflicting_gap"] == 0.5


def test_a_users_group_file_is_read(tmp_path):
    path = tmp_path / "groups.csv"
    path.write_text("id,group\n0,water\n1,land\n3,water\n")
    groups = read_group_file(path, 5)
    assert groups.names == ("water", "land") and groups.of_image.tolist() == [0, 1, -1, 0, -1] and groups.aligned is None
    rows = group_table(np.array([1, 1, 0, 0, 0]), np.array([1, 0, 0, 0, 0]), groups)
    m = group_metrics(rows)
    assert m == {"worst_group_accuracy": 0.0, "group_accuracy/water": 1.0, "group_accuracy/land": 0.0}


@pytest.mark.parametrize("text, fragment", [
    ("id,group\n0,a\n9,b\n", "id 9 is not a test image (the test split has 5)"),
    ("id,group\n0,a\n1,a\n", "has 1 group(s); worst-group accuracy needs at least 2"),
    ("image,label\n0,a\n", "does not start with the header 'id,group'"),
    ("id,group\n0,a\nx,b\n", "line 3: 'x,b' is not 'id,group'"),
    ("id,group\n0,a\n0,b\n", "id 0 is given twice"),
])
def test_a_bad_group_file_is_refused_in_one_line(tmp_path, text, fragment):
    path = tmp_path / "groups.csv"
    path.write_text(text)
    with pytest.raises(I2XError, match=None) as err:
        read_group_file(path, 5)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_group_file_as_excel_saves_it_is_read(tmp_path):
    """Issue 44: Excel's "CSV UTF-8" starts with a byte-order mark (refused as having no header)
    and ends lines with CR LF."""
    path = tmp_path / "groups.csv"
    path.write_bytes("id,group\r\n0,water\r\n1,land\r\n2,water\r\n".encode("utf-8-sig"))
    groups = read_group_file(path, 3)
    assert groups.names == ("water", "land") and groups.of_image.tolist() == [0, 1, 0]


def test_group_names_become_metric_names_mlflow_takes(mlflow_store):
    """Issue 44: a group named ``../up`` failed after training, on MLflow's metric name."""
    import mlflow

    from i2x.training.evaluation import metric_name

    names = ["../up", "a/./b", "trailing/", "x" * 150, "T-shirt/top"]
    keys = [f"group_accuracy/{metric_name(n)}" for n in names]
    assert keys[0] == "group_accuracy/_/up" and keys[-1] == "group_accuracy/T-shirt/top" and len(set(keys)) == len(keys)
    mlflow.set_experiment("groups")
    with mlflow.start_run():
        mlflow.log_metrics(dict.fromkeys(keys, 0.5))
