"""The plan printed before work (issue 24): over an hour, it says how to cut it with exact flags."""

from i2x.platform.config_io import load_config
from i2x.runs.plan import StagePlan, cuts, estimate
from i2x.training.data import load_data
from i2x.training.loop import resolve_device


def _plan(stages: dict[str, float], config) -> StagePlan:
    return StagePlan("cpu", "cnn", 16, 1000, 100, 0.1, 0.01, 0.001, stages, "", cuts(config, stages))


def test_a_long_plan_names_the_flags_that_cut_its_longest_stages():
    config = load_config("cifar10", {"tune.n_trials": 6, "tune.seeds": 3, "tune.epoch_samples": 15000, "train.epochs": 10})
    lines = _plan({"train": 1900.0, "explain": 300.0, "tune": 2500.0}, config).lines()
    advice = [line for line in lines if "over an hour" in line]
    assert len(advice) == 1, lines
    assert "make run OVERRIDES=tune.n_trials=3,tune.seeds=2,tune.epoch_samples=7500,train.epochs=5" in advice[0]
    assert "data.analysis_size" not in advice[0]  # explain is not among the two longest stages


def test_a_short_plan_gives_no_advice():
    config = load_config("mnist")
    assert not [line for line in _plan({"train": 600.0, "explain": 900.0, "tune": 2000.0}, config).lines() if "over an hour" in line]


def test_acting_on_findings_says_tune_is_seconds_without_one(tmp_path):
    config = load_config("smoke", {"work_dir": str(tmp_path), "tune.act_on": "findings"})
    plan = estimate(config, load_data(config.data, config.seed, config.plant), resolve_device("cpu"), repeats=1)
    lines = plan.lines()
    tune = next(line for line in lines if line.strip().startswith("tune"))
    assert tune.split()[1] == "seconds," and "if the explanation states a shortcut check" in tune, tune
    total = next(line for line in lines if line.strip().startswith("total"))
    # issue 43: the total was train + explain + a tune that then acted on nothing; tune is now apart from it
    assert " + tune (" in total, total
    candidates = estimate(load_config("smoke", {"work_dir": str(tmp_path)}), load_data(config.data, config.seed, config.plant),
                          resolve_device("cpu"), repeats=1)
    assert "shortcut check" not in next(line for line in candidates.lines() if line.strip().startswith("tune"))
