import pytest

from i2x.platform.config import Config, ExplainConfig
from i2x.platform.config_io import (
    apply_overrides,
    available_configs,
    config_from_dict,
    load_config,
    parse_overrides,
)
from i2x.platform.errors import I2XError


def test_named_configs_load_and_differ():
    names = available_configs()
    assert {"mnist", "cifar10", "smoke", "fashion-mnist", "imagefolder"} <= set(names)
    mnist, cifar = load_config("mnist"), load_config("cifar10")
    assert mnist.data.name == "mnist" and mnist.explain.n_prototypes == 32  # paper: K=32 on MNIST
    assert cifar.data.name == "cifar10" and cifar.explain.n_prototypes == 128  # paper: K=128 on CIFAR-10
    assert cifar.model.name == "auto"  # fastnet, sized by device (see test_models)


def test_typed_overrides_apply():
    cfg = load_config("mnist", "train.epochs=5,explain.ridge_lambda=2,seed=7,train.checkpoint_fractions=[0.2,0.4],data.augment=true")
    assert cfg.train.epochs == 5 and isinstance(cfg.train.epochs, int)
    assert cfg.explain.ridge_lambda == 2.0 and isinstance(cfg.explain.ridge_lambda, float)
    assert cfg.seed == 7
    assert cfg.train.checkpoint_fractions == (0.2, 0.4)
    assert cfg.data.augment is True


def test_override_split_keeps_commas_inside_lists():
    assert parse_overrides("a.b=[1,2],c.d=3") == {"a.b": "[1,2]", "c.d": "3"}


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epochz=3", "unknown config key 'train.epochz'"),
        ("nosection=3", "unknown config key 'nosection'"),
        ("train.epochs=three", "config key 'train.epochs' expects int"),
        ("train.lr=fast", "config key 'train.lr' expects float"),
        ("data.augment=maybe", "config key 'data.augment' expects bool"),
    ],
)
def test_bad_override_is_one_line_naming_the_key(override, fragment):
    with pytest.raises(I2XError) as err:
        load_config("mnist", override)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 2\n  learning_rate: 0.1\n")
    with pytest.raises(I2XError, match="unknown config key 'train.learning_rate'"):
        load_config(str(path))


def test_missing_config_lists_choices():
    with pytest.raises(I2XError, match="config 'nope' not found.*smoke"):
        load_config("nope")


def test_round_trip_through_checkpoint_dict():
    cfg = load_config("smoke", "explain.n_prototypes=9")
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    assert "run.seed" in cfg.flat() and "explain.n_prototypes" in cfg.flat()


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]
    assert apply_overrides(cfg, {"seed": "3"}).seed == 3
    assert ExplainConfig().uncertain_threshold == 0.15
    with pytest.raises(I2XError, match="config key .explain.regression. must be one of centred, origin"):
        apply_overrides(cfg, {"explain.regression": "through-zero"})


def test_a_retired_key_is_ignored_in_old_checkpoints_and_refused_elsewhere():
    old = Config().to_dict()
    old["explain"]["r2_holdout"] = 0.2  # written by versions before the k-fold R^2
    assert config_from_dict(old) == Config()
    with pytest.raises(I2XError, match="unknown config key 'explain.r2_holdout'"):
        apply_overrides(Config(), {"explain.r2_holdout": "0.2"})


def test_a_config_file_sizes_itself_to_the_device_and_overrides_still_win(tmp_path):
    path = tmp_path / "sized.yaml"
    path.write_text("tune:\n  seeds: 5\n  n_trials: 20\ndevices:\n  cpu:\n    tune:\n      seeds: 3\n  cuda:\n    tune:\n      n_trials: 40\n")
    on_cpu = load_config(str(path), "train.device=cpu")
    assert (on_cpu.tune.seeds, on_cpu.tune.n_trials) == (3, 20)
    on_gpu = load_config(str(path), "train.device=cuda")  # resolving the config needs no GPU
    assert (on_gpu.tune.seeds, on_gpu.tune.n_trials) == (5, 40)
    assert load_config(str(path), "train.device=cpu,tune.seeds=4").tune.seeds == 4
    path.write_text("devices:\n  tpu:\n    tune:\n      seeds: 3\n")
    with pytest.raises(I2XError, match="'devices' must map cpu and/or cuda to sections"):
        load_config(str(path))
    path.write_text("devices:\n  cpu:\n    tune:\n      seedz: 3\n")
    with pytest.raises(I2XError, match=r"unknown config key 'tune.seedz' in .*\(devices.cpu\)"):
        load_config(str(path), "train.device=cpu")


def test_the_config_reference_in_docs_is_current():
    """docs/config.md is generated from the dataclasses (`make docs`): every key, its default,
    what it accepts and its meaning."""
    from i2x.platform.config_io import config_table

    from .conftest import ROOT

    assert (ROOT / "docs" / "config.md").read_text() == config_table() + "\n", "run `make docs`"


def test_every_numeric_key_declares_its_range_and_every_rule_can_fail():
    """Issue 44: a range on every number, declared once next to its field; each rule between
    keys refuses a config that breaks it."""
    import dataclasses
    import typing

    import pytest

    from i2x.platform.config import SECTIONS, Config
    from i2x.platform.config_io import load_config
    from i2x.platform.errors import I2XError

    hints = typing.get_type_hints(Config)
    for name in SECTIONS:
        for f in dataclasses.fields(hints[name]):
            kind = typing.get_type_hints(hints[name])[f.name]
            numeric = kind in (int, float) or (typing.get_origin(kind) is tuple and typing.get_args(kind)[0] in (int, float))
            assert not numeric or "bounds" in f.metadata, f"{name}.{f.name} declares no range"
    for overrides, said in [({"tune.threshold_min": 0.7}, "tune.threshold_min must be below tune.threshold_max"),
                            ({"tune.lr_min": 0.1}, "tune.lr_min must be at most tune.lr_max"),
                            ({"explain.null_max_permutations": 10}, "explain.null_max_permutations must be at least"),
                            ({"explain.fit_max_locations": 10}, "explain.fit_max_locations must be at least explain.n_prototypes"),
                            ({"explain.min_group_for_r2": 3}, "explain.min_group_for_r2 must be at least explain.r2_folds"),
                            ({"faithfulness.max_images": 5}, r"faithfulness.max_images must be 0 \(all\) or at least"),
                            ({"data.image_size": 16, "data.translate": 8}, "data.translate must be less than half")]:
        with pytest.raises(I2XError, match=said):
            load_config("mnist", overrides)


@pytest.mark.slow
def test_a_seeded_slice_of_random_config_values_is_refused_in_one_line_or_runs_to_the_end():
    """Issue 44's sweep (bench/config_sweep.py), a seeded slice of 8 draws through the real CLI:
    each value the config loader refuses is refused in one line before any run opens, and the
    first value it accepts runs `i2x main --config smoke` to the end with every run FINISHED (the
    other accepted draws are skipped: each is a whole run, minutes of CI)."""
    import sys

    from .conftest import ROOT

    sys.path.insert(0, str(ROOT))
    from bench.config_sweep import sweep

    rows = sweep(4, 1, only=8, cap_s=900, max_runs=1)
    assert [(r["key"], r["outcome"]) for r in rows if r["outcome"] != ("finished" if r["accepted"] else "refused")] == []
    assert sum(r["outcome"] == "finished" for r in rows) == 1 and sum(r["outcome"] == "refused" for r in rows) >= 3, rows
